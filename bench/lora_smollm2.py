"""Sparse LoRA on SmolLM2-135M pruned one-shot (Wanda/SparseGPT, 50% or 2:4): perplexity after LoRA vs full fine-tuning vs none.

For each pruned model: no fine-tuning; full fine-tuning of every weight with the masks held (a
Pruner with ``pa.llm.sparse_finetune``); LoRA (peft, rank 8 and 16, on every block Linear) through
the masked product, and at rank 8 also with the mask applied only at merge. Perplexity on held-out
Shakespeare after merging; trainable parameters, peak resident memory during fine-tuning and wall
time per step; the merged model's counted sparsity against the pruned base's. Same data, steps
and learning-rate warmup for every variant.

    nice -n 5 python bench/lora_smollm2.py [--methods wanda sparsegpt] [--patterns 0.5 2:4] [--steps 20] [--out runs/lora_smollm2.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import peft
import torch
from fsdp_smollm2 import PeakRSS  # bench/ is on the path when this script runs
from torch import nn

import pruneaware as pa
from pruneaware.data.shakespeare import load_plays
from pruneaware.lora import SparseLoRA

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def block_zeros(model: nn.Module) -> int:
    return sum(int((m.weight == 0).sum()) for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{name}")


def train(model: nn.Module, windows: torch.Tensor, args: argparse.Namespace, lr: float, pruner: pa.Pruner | None = None) -> dict[str, float]:
    """AdamW with warmup on the trainable parameters; with ``pruner`` driven by hand around each step (masks held)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(args.steps // 10, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min((step + 1) / warmup, 1.0))
    model.train()
    start = time.perf_counter()
    with PeakRSS() as rss:
        for batch in windows.split(args.batch)[: args.steps]:
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if pruner is not None:
                pruner.before_step()
            optimizer.step()
            if pruner is not None:
                pruner.step()
            scheduler.step()
    if pruner is not None:
        pruner.finalize()
    model.eval()
    return {"step_s": (time.perf_counter() - start) / args.steps, "peak_rss_mb": rss.peak / 2**20, "trainable": sum(p.numel() for p in params)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"])
    parser.add_argument("--patterns", nargs="+", default=["0.5", "2:4"])
    parser.add_argument("--ranks", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--lr-full", type=float, default=2e-5)
    parser.add_argument("--lr-lora", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/lora_smollm2.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = pa.llm.load_smollm2()
    heldout, train_tokens = pa.llm.encode(tokenizer, load_plays("heldout")), pa.llm.encode(tokenizer, load_plays("train"))
    evaluation = pa.llm.spaced_windows(heldout, args.window, args.eval_windows)
    calibration = list(pa.llm.random_windows(train_tokens, args.window, args.calibration, seed=0).split(4))
    windows = pa.llm.random_windows(train_tokens, args.window, args.steps * args.batch, seed=1)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    results: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        results.append(row)
        print(json.dumps(row), flush=True)
        machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "load": os.getloadavg()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine, "results": results}, indent=1))

    for method in args.methods:
        for text in args.patterns:
            pattern: float | str = text if ":" in text else float(text)
            model.load_state_dict(dense)
            prune = pa.llm.wanda_prune if method == "wanda" else pa.llm.sparsegpt_prune
            prune(model, calibration, pattern)
            pruned = {k: v.clone() for k, v in model.state_dict().items()}
            base_zeros = block_zeros(model)
            common = {"method": method, "pattern": text, "base_zeros": base_zeros}
            record({**common, "variant": "none", "perplexity": pa.llm.perplexity(model, evaluation)})
            pruner = pa.Pruner(model, None, pa.llm.sparse_finetune(pattern), total_steps=args.steps)
            model.model.embed_tokens.weight.requires_grad_(False)
            stats = train(model, windows, args, args.lr_full, pruner)
            model.model.embed_tokens.weight.requires_grad_(True)
            record({**common, "variant": "full, masks held", **stats, "perplexity": pa.llm.perplexity(model, evaluation), "zeros": block_zeros(model)})
            for rank, mode in [(r, "product") for r in args.ranks] + [(args.ranks[0], "merge")]:
                model.load_state_dict(pruned)
                torch.manual_seed(0)
                lora_model = peft.get_peft_model(model, peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS))
                lora = SparseLoRA(lora_model, mode=mode)
                stats = train(lora_model, windows, args, args.lr_lora)
                merged = lora.merge()
                record({**common, "variant": f"LoRA r={rank}, {mode}", **stats, "perplexity": pa.llm.perplexity(merged, evaluation), "zeros": block_zeros(merged)})
                model = merged


if __name__ == "__main__":
    main()
