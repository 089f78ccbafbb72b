"""Sparse LoRA on SmolLM2-135M pruned one-shot (Wanda/SparseGPT, 50% or 2:4): perplexity after LoRA vs full fine-tuning vs none.

One invocation measures one row, so a table is built from separate short runs (each appends a
JSON line to ``--out``; ``--table`` prints the rows gathered so far as Markdown). Variants:
``none`` (the pruned model as it is); ``full`` (every weight but the tied embedding trained, the
masks held by a Pruner with ``pa.llm.sparse_finetune``); ``lora`` (peft, rank ``--rank`` on every
block Linear, the base frozen) trained through the masked product, or with the mask applied only
at merge (``--lora-mode merge``). Perplexity on held-out Shakespeare after merging; trainable
parameters, peak resident memory during fine-tuning, wall time; the merged model's zeros in the
block Linears must equal the pruned base's (asserted). The pruned model is cached per
method/pattern, so every variant starts from the same weights; same data, steps and warmup for all.

    nice -n 10 python bench/lora_smollm2.py --method wanda --pattern 0.5 --variant lora --rank 8 [--steps 8]
    python bench/lora_smollm2.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from peak_memory import PeakRSS, release_freed  # bench/ is on the path when this script runs
from torch import nn

import pruneaware as pa
from pruneaware.data.shakespeare import load_plays

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def block_zeros(model: nn.Module) -> int:
    return sum(int((m.weight == 0).sum()) for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{name}")


def train(model: nn.Module, windows: torch.Tensor, args: argparse.Namespace, lr: float, pruner: pa.Pruner | None = None) -> dict[str, float]:
    """AdamW with linear warmup on the trainable parameters; with ``pruner`` driven by hand around each step (masks held).

    Wall and CPU seconds (all threads of this process) are both kept: on a shared machine the wall time
    grows with other work, the CPU time much less.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(args.steps // 10, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min((step + 1) / warmup, 1.0))
    model.train()
    release_freed()
    start, cpu_start = time.perf_counter(), time.process_time()
    with PeakRSS() as peak:
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
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    return {"train_s": seconds, "step_s": seconds / args.steps, "cpu_s": cpu_seconds, "peak_rss_mb": peak.mib, "trainable": sum(p.numel() for p in params)}


def prune(model: nn.Module, args: argparse.Namespace, train_tokens: torch.Tensor) -> float:
    """Prune SmolLM2-135M by ``args.method`` to ``args.pattern`` in place (or load it from the cache); the seconds pruning took (0 if cached)."""
    if args.method == "dense":
        return 0.0
    cache = args.out.parent / "lora_smollm2" / f"{args.method}-{args.pattern.replace(':', 'of')}.pt"
    if cache.exists():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return 0.0
    calibration = list(pa.llm.random_windows(train_tokens, args.window, args.calibration, seed=0).split(4))
    pattern: float | str = args.pattern if ":" in args.pattern else float(args.pattern)
    start = time.perf_counter()
    (pa.llm.wanda_prune if args.method == "wanda" else pa.llm.sparsegpt_prune)(model, calibration, pattern)
    seconds = time.perf_counter() - start
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache)
    return seconds


def measure(args: argparse.Namespace) -> dict[str, Any]:
    model, tokenizer = pa.llm.load_smollm2()
    heldout, train_tokens = pa.llm.encode(tokenizer, load_plays("heldout")), pa.llm.encode(tokenizer, load_plays("train"))
    evaluation = pa.llm.spaced_windows(heldout, args.window, args.eval_windows)
    windows = pa.llm.random_windows(train_tokens, args.window, args.steps * args.batch, seed=1)
    prune_s = prune(model, args, train_tokens)
    base_zeros = block_zeros(model)
    row: dict[str, Any] = {"method": args.method, "pattern": args.pattern, "variant": args.variant, "base_zeros": base_zeros, "prune_s": prune_s}
    if args.variant == "full":
        pattern: float | str = args.pattern if ":" in args.pattern else float(args.pattern)
        pruner = pa.Pruner(model, None, pa.llm.sparse_finetune(pattern), total_steps=args.steps)
        model.model.embed_tokens.weight.requires_grad_(False)  # tied to lm_head: the vocabulary stays as it is
        row.update(train(model, windows, args, args.lr_full, pruner))
        pruner.finalize()
    elif args.variant == "lora":
        import peft

        from pruneaware.lora import SparseLoRA

        torch.manual_seed(0)
        lora_model = peft.get_peft_model(model, peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGETS))
        lora = SparseLoRA(lora_model, mode=args.lora_mode)
        row.update(train(lora_model, windows, args, args.lr_lora), rank=args.rank, lora_mode=args.lora_mode)
        model = lora.merge()
    row.update(zeros=block_zeros(model), perplexity=pa.llm.perplexity(model, evaluation))
    if row["zeros"] != base_zeros:
        raise SystemExit(f"the fine-tuned model has {row['zeros']} zeros in its block Linears, the pruned base {base_zeros}: sparsity was not kept")
    row["block_sparsity"] = base_zeros / sum(m.weight.numel() for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{n}")
    return row


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [
        "| method | pattern | variant | perplexity | trainable | peak RSS (MiB) | train s wall (s/step) | train CPU s | load | block sparsity, merged = base |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["variant"] if r["variant"] != "lora" else f"LoRA r={r['rank']}, {r['lora_mode']}"
        train = f"{r['train_s']:.0f} ({r['step_s']:.1f})" if "train_s" in r else ""
        memory = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        trainable = f"{r['trainable']:,}" if "trainable" in r else "0"
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else ""
        machine = r.get("machine", {})
        loads = [machine[key][0] for key in ("load_start", "load") if key in machine]
        load_text = "-".join(f"{value:.1f}" for value in loads)  # 1-minute load average at the start and the end
        lines.append(
            f"| {r['method']} | {r['pattern']} | {name} | {r['perplexity']:.1f} | {trainable} | {memory} | {train} | {cpu} | {load_text}"
            f" | {r['block_sparsity']:.4f}, {r['zeros'] == r['base_zeros']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["dense", "wanda", "sparsegpt"], default="wanda")
    parser.add_argument("--pattern", choices=["0.5", "2:4"], default="0.5")
    parser.add_argument("--variant", choices=["none", "full", "lora"], default="none")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lora-mode", choices=["product", "merge"], default="product")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--lr-full", type=float, default=2e-5)
    parser.add_argument("--lr-lora", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/lora_smollm2.jsonl"))
    parser.add_argument("--table", action="store_true", help="print the rows in --out as a Markdown table and exit")
    args = parser.parse_args()
    if args.table:
        print(table(args.out))
        return
    if args.method == "dense" and args.variant != "none":
        parser.error("--method dense measures the unpruned model: --variant none")
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    row = measure(args)
    machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "load_start": load_start, "load": os.getloadavg()}
    row.update(args={k: str(v) for k, v in vars(args).items()}, machine=machine)
    print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as out:
        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
