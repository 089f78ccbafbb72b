"""MiniLM-L6 sentence embeddings, 6 -> 4 layers and optionally heads + FFN neurons removed: pruning alone against pruning + distillation.

Layers are chosen by block influence on training passages; width pruning (``--width``) removes that
fraction of every layer's attention heads and FFN neurons (L2 norm, the residual width of 384 kept).
"<shape>" scores the model right after pruning (no training: an embedding model has no task loss
to fine-tune on without a teacher); "<shape>+distill" prunes the same way at step 0 and trains
``--steps`` AdamW steps (learning rate decaying linearly to 0) with the ``distill`` stage alone as
the loss (``1 - cos`` of the final hidden states against the frozen dense model). The score is the
mean cosine similarity of the sentence embeddings to the dense model's on held-out Shakespeare plays.

    nice -n 10 flock /tmp/pa-heavy.lock .venv/bin/python bench/compress_minilm.py --steps 200 > /tmp/compress_minilm.jsonl
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

RESIDUAL = ["embeddings.*", "*.attention.output.dense", "encoder.layer.*.output.dense", "pooler.*"]
"""Modules whose outputs are the residual stream: width pruning leaves its 384 channels alone."""


def recipe(width: float, remove: int, distill: bool, order: str, last: str) -> dict:
    """Depth (``remove`` layers), width (``width`` of each layer's heads and FFN neurons) in ``order``, distillation first."""
    shape = [{"type": "depth", "remove": remove, "layers": ["encoder.layer.*"]}]
    result: dict = {"scope": {"include": ["*"]}}
    if width > 0:
        result["structured"] = {
            "importance": "l2", "allocation": "uniform", "heads": True, "ignore": RESIDUAL,
            "schedule": {"type": "one_shot", "sparsity": width, "at": 0},
        }
        shape = ["channels", *shape] if order == "width-first" else [*shape, "channels"]
    if distill:
        shape = [{"type": "distill", "kl": 0.0, "layers": [last], "hidden_loss": "cosine"}, *shape]
    result["stages"] = shape
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--remove", type=int, default=2)
    parser.add_argument("--width", type=float, nargs="+", default=[0.0, 0.25], help="fractions of heads and FFN neurons removed per layer (0: depth only)")
    parser.add_argument("--order", choices=("width-first", "depth-first"), default="width-first")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense, tokenizer = load_encoder()
    train = token_batches(tokenizer, shakespeare_passages("train", args.steps * args.batch, seed=args.seed), args.batch)
    heldout = token_batches(tokenizer, shakespeare_passages("heldout", args.heldout, seed=1), 64)
    targets = embed_batches(dense, heldout)
    last = f"encoder.layer.{dense.config.num_hidden_layers - 1}"
    print(json.dumps({"variant": "dense", "cosine": mean_cosine(dense, heldout, targets), "params": sum(p.numel() for p in dense.parameters())}), flush=True)
    for width in args.width:
        for distill in (False, True):
            name = ("depth" if width == 0 else f"width {width:g} + depth") + ("+distill" if distill else "")
            torch.manual_seed(args.seed)
            model = copy.deepcopy(dense).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
            steps = args.steps if distill else 0
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(steps, 1))
            pruner = pa.Pruner(
                model, optimizer, recipe(width, args.remove, distill, args.order, last), total_steps=max(steps, 1),
                example_inputs=train[0], calibration_data=[(b, None) for b in train[:4]],
            )
            start = time.perf_counter()
            for batch in train[:steps]:
                model(**batch)
                loss = pruner.penalty()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            seconds = time.perf_counter() - start
            removed = [n for n, m in model.named_modules() if type(m).__name__ == "SkippedBlock"]
            pruner.finalize()
            model.eval()
            heads = [m.num_attention_heads for m in model.modules() if type(m).__name__ == "BertSelfAttention"]
            ffn = [m.out_features for n, m in model.named_modules() if n.endswith("intermediate.dense")]
            print(json.dumps({
                "variant": name, "cosine": mean_cosine(model, heldout, targets), "layers": model.config.num_hidden_layers, "removed": removed,
                "heads": heads, "ffn": ffn, "params": sum(p.numel() for p in model.parameters()),
                "encoder_params": sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder.")),
                "steps": steps, "seconds": seconds, "order": args.order,
            }), flush=True)


if __name__ == "__main__":
    main()
