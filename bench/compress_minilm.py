"""MiniLM-L6 sentence embeddings with 6 -> 4 layers: removal alone against removal + distillation from the dense model.

Layers are chosen by block influence on training passages. "removed" scores the model right after
removal; "removed+distill" trains ``--steps`` steps with the ``distill`` stage alone as the loss
(``1 - cos`` of the final hidden states against the frozen dense model). The score is the mean
cosine similarity of the sentence embeddings to the dense model's on held-out Shakespeare plays.

    nice -n 5 .venv/bin/python bench/compress_minilm.py --steps 200 > /tmp/compress_minilm.jsonl
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import pruneaware as pa  # noqa: E402
from pruneaware.text.distill import embed_batches, mean_cosine, shakespeare_passages, token_batches  # noqa: E402
from pruneaware.text.minilm import load_encoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--remove", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense, tokenizer = load_encoder()
    dense.eval()
    train = token_batches(tokenizer, shakespeare_passages("train", args.steps * args.batch, seed=0), args.batch)
    heldout = token_batches(tokenizer, shakespeare_passages("heldout", args.heldout, seed=1), 64)
    targets = embed_batches(dense, heldout)
    depth = {"type": "depth", "remove": args.remove, "layers": ["encoder.layer.*"]}
    last = f"encoder.layer.{dense.config.num_hidden_layers - 1}"
    for name, stages in (("removed", [depth]), ("removed+distill", [{"type": "distill", "kl": 0.0, "layers": [last], "hidden_loss": "cosine"}, depth])):
        model = copy.deepcopy(dense).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        recipe = {"scope": {"include": ["*"]}, "stages": stages}
        pruner = pa.Pruner(model, optimizer, recipe, total_steps=max(args.steps, 1), example_inputs=train[0], calibration_data=[(b, None) for b in train[:4]])
        start = time.perf_counter()
        if name == "removed+distill":
            for batch in train[: args.steps]:
                model(**batch)
                loss = pruner.penalty()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        seconds = time.perf_counter() - start
        removed = [n for n, m in model.named_modules() if type(m).__name__ == "SkippedBlock"]
        pruner.finalize()
        model.eval()
        print(json.dumps({
            "variant": name, "cosine": mean_cosine(model, heldout, targets), "layers": model.config.num_hidden_layers, "removed": removed,
            "params": sum(p.numel() for p in model.parameters()), "steps": args.steps if name != "removed" else 0, "seconds": seconds,
        }), flush=True)
    print(json.dumps({"variant": "dense", "cosine": mean_cosine(dense, heldout, targets), "params": sum(p.numel() for p in dense.parameters())}), flush=True)


if __name__ == "__main__":
    main()
