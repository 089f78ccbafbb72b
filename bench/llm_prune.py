"""One-shot pruning of SmolLM2-135M (magnitude, Wanda, SparseGPT at 50% and 2:4), then a short pruning-aware fine-tune; MiniLM-L6 too.

Perplexity is measured on held-out Shakespeare plays (never used for calibration or fine-tuning) in
fixed windows; calibration and fine-tuning windows come from the training plays. The Linears of the
transformer blocks are pruned; embeddings and the (tied) output head stay dense. Magnitude pruning
is the library's own Pruner (per-layer magnitude); the fine-tune holds the one-shot masks with a
``pa.llm.sparse_finetune`` recipe. MiniLM-L6's mean-pooled normalized embeddings of held-out
speeches are compared with the dense model's by cosine similarity.

    nice -n 5 python bench/llm_prune.py [--threads 2] [--eval-windows 16] [--calibration 32] [--steps 40] [--out runs/llm_prune.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

import pruneaware as pa
from pruneaware.data.assets import asset_path
from pruneaware.data.shakespeare import load_plays, speeches

METHODS = ("magnitude", "wanda", "sparsegpt")
console = Console()


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer: pruning changes the block Linears, a fine-tune also the norms."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@torch.no_grad()
def restore(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put back the whole snapshot, so every start begins from the same dense model."""
    model.load_state_dict(state)


def block_sparsity(model: nn.Module, prefix: str) -> float:
    """Fraction of zeros over the block Linears, counted from the weights."""
    weights = [m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith(prefix)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def one_shot(model: nn.Module, method: str, pattern: float | str, calibration: Iterable[Any], include: str) -> None:
    """Prune ``model`` in place: magnitude through a Pruner with the sparse-finetune recipe, the others through pa.llm."""
    if method == "magnitude":
        pa.Pruner(model, None, pa.llm.sparse_finetune(pattern, include=(include,)), total_steps=1).finalize()
    elif method == "wanda":
        pa.llm.wanda_prune(model, calibration, pattern)
    else:
        pa.llm.sparsegpt_prune(model, calibration, pattern)


def finetune(model: nn.Module, pattern: float | str | None, windows: torch.Tensor, args: argparse.Namespace) -> float:
    """AdamW on the block weights and norms (embeddings and tied head frozen), one-shot masks held; seconds per step."""
    model.model.embed_tokens.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warmup = max(args.steps // 10, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min((step + 1) / warmup, 1.0))
    pruner = pa.Pruner(model, optimizer, pa.llm.sparse_finetune(pattern), total_steps=args.steps) if pattern is not None else None
    model.train()
    start = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(f"  fine-tune ({args.steps} steps)", total=args.steps)
        for batch in windows.split(args.batch)[: args.steps]:
            loss = model(batch, labels=batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(task, advance=1, description=f"  fine-tune, loss {loss.item():.3f}")
    seconds = (time.perf_counter() - start) / args.steps
    if pruner is not None:
        pruner.finalize()
    model.model.embed_tokens.weight.requires_grad_(True)
    model.eval()
    return seconds


class SmolLM:
    """SmolLM2-135M with its data: held-out evaluation windows, calibration batches, the dense block weights."""

    prefix = "model.layers"

    def __init__(self, args: argparse.Namespace):
        start = time.perf_counter()
        self.args = args
        self.model, tokenizer = pa.llm.load_smollm2()
        heldout = pa.llm.encode(tokenizer, load_plays("heldout"))
        self.train = pa.llm.encode(tokenizer, load_plays("train"))
        console.print(f"SmolLM2-135M loaded and plays tokenized in {time.perf_counter() - start:.0f} s: {self.train.numel():,} train tokens, {heldout.numel():,} held-out")
        self.evaluation = pa.llm.spaced_windows(heldout, args.window, args.eval_windows)
        self.calibration = list(pa.llm.random_windows(self.train, args.window, args.calibration, seed=0).split(args.calibration_batch))
        self.dense = snapshot(self.model)

    def perplexity(self, label: str) -> float:
        t = time.perf_counter()
        value = pa.llm.perplexity(self.model, self.evaluation, batch_size=self.args.eval_batch)
        console.print(f"  {label}: perplexity {value:.2f} ({time.perf_counter() - t:.0f} s to evaluate)")
        return value

    def prune(self, method: str, pattern: float | str) -> dict[str, Any]:
        """Prune the dense model one-shot; the row of the one-shot table."""
        restore(self.model, self.dense)
        t = time.perf_counter()
        one_shot(self.model, method, pattern, self.calibration, f"{self.prefix}.*")
        seconds = time.perf_counter() - t
        label = f"{method} {pa.llm.parse_target(pattern)}"
        console.print(f"{label}: pruned in {seconds:.0f} s, block sparsity {block_sparsity(self.model, self.prefix):.4f}")
        return {"method": method, "pattern": str(pattern), "perplexity": self.perplexity(label), "prune_seconds": round(seconds, 1),
                "block_sparsity": round(block_sparsity(self.model, self.prefix), 6)}


def smollm_one_shot(smol: SmolLM, results: dict[str, Any], save: Callable[[], None]) -> None:
    """Dense perplexity, then each method at 50% and 2:4 from the same dense weights."""
    table = results.setdefault("smollm2", {})
    table["dense_perplexity"] = smol.perplexity("dense")
    table["one_shot"] = []
    save()
    for pattern in (0.5, "2:4"):
        for method in METHODS:
            table["one_shot"].append(smol.prune(method, pattern))
            save()


def smollm_finetune(smol: SmolLM, results: dict[str, Any], save: Callable[[], None]) -> None:
    """The same short fine-tune from a Wanda or SparseGPT start, from magnitude, and from dense (the domain-adaptation control)."""
    args, table = smol.args, results.setdefault("smollm2", {})
    pattern = args.finetune_pattern
    one_shot_rows = {r["method"]: r for r in table.get("one_shot", []) if r["pattern"] == str(pattern)}
    start = args.finetune_from
    if start == "best":
        if not one_shot_rows:
            raise SystemExit("--finetune-from best needs the oneshot stage in the same run; name wanda or sparsegpt instead")
        start = min(("wanda", "sparsegpt"), key=lambda m: one_shot_rows[m]["perplexity"])
    windows = pa.llm.random_windows(smol.train, args.finetune_seq, args.steps * args.batch, seed=1)
    table["finetune"] = []
    chosen = {"calibrated": start, "magnitude": "magnitude", "dense": "dense"}
    for method in [chosen[name] for name in args.finetune_starts]:
        held = None if method == "dense" else pattern
        if held is None:
            restore(smol.model, smol.dense)
            if "dense_perplexity" not in table:
                table["dense_perplexity"] = smol.perplexity("dense")
            before = table["dense_perplexity"]
        else:  # pruned again from the dense weights: the same start as the one-shot table's, seeds and data fixed
            before = smol.prune(method, held)["perplexity"]
        console.print(f"fine-tune from {method} {'' if held is None else pa.llm.parse_target(held)}")
        seconds = finetune(smol.model, held, windows, args)
        table["finetune"].append(
            {"start": method, "pattern": None if held is None else str(held), "perplexity_before": before,
             "perplexity_after": smol.perplexity(f"after fine-tune from {method}"), "seconds_per_step": round(seconds, 2),
             "block_sparsity": round(block_sparsity(smol.model, smol.prefix), 6)}
        )
        save()


def embed(model: nn.Module, tokenizer: Any, texts: list[str], batch: int) -> torch.Tensor:
    """Mean-pooled (padding excluded), L2-normalized sentence embeddings, as all-MiniLM-L6-v2 defines them."""
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            encoded = tokenizer(texts[i : i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def run_minilm(args: argparse.Namespace, results: dict[str, Any], save: Callable[[], None]) -> None:
    from transformers import AutoModel, AutoTokenizer

    folder = asset_path("minilm")
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    train_speeches = [s for text in load_plays("train").values() for s in speeches(text)]
    heldout_speeches = [s for text in load_plays("heldout").values() for s in speeches(text)]
    generator = torch.Generator().manual_seed(0)
    chosen = [train_speeches[i] for i in torch.randperm(len(train_speeches), generator=generator)[: args.minilm_calibration].tolist()]
    calibration = [
        dict(tokenizer(chosen[i : i + 16], padding=True, truncation=True, max_length=128, return_tensors="pt"))
        for i in range(0, len(chosen), 16)
    ]
    step = max(len(heldout_speeches) // args.minilm_eval, 1)
    evaluation = heldout_speeches[::step][: args.minilm_eval]
    prefix = "encoder.layer"
    dense_weights = snapshot(model)
    reference = embed(model, tokenizer, evaluation, 64)
    rows = results.setdefault("minilm", {"speeches": len(evaluation), "calibration_speeches": len(chosen), "rows": []})["rows"]
    for pattern in (0.5, "2:4"):
        for method in METHODS:
            restore(model, dense_weights)
            one_shot(model, method, pattern, calibration, f"{prefix}.*")
            cosine = (embed(model, tokenizer, evaluation, 64) * reference).sum(1)
            rows.append({"method": method, "pattern": str(pattern), "mean_cosine": round(cosine.mean().item(), 4),
                         "p05_cosine": round(cosine.quantile(0.05).item(), 4), "block_sparsity": round(block_sparsity(model, prefix), 6)})
            console.print(f"MiniLM {method} {pa.llm.parse_target(pattern)}: mean cosine to dense {rows[-1]['mean_cosine']:.4f}")
            save()


def print_tables(results: dict[str, Any]) -> None:
    smol = results.get("smollm2", {})
    if smol.get("one_shot"):
        table = Table(title=f"SmolLM2-135M, held-out perplexity (dense {smol['dense_perplexity']:.2f})")
        table.add_column("method")
        for pattern in ("0.5", "2:4"):
            table.add_column("50% unstructured" if pattern == "0.5" else "2:4", justify="right")
        for method in METHODS:
            cells = [next((f"{r['perplexity']:.2f}" for r in smol["one_shot"] if r["method"] == method and r["pattern"] == p), "-") for p in ("0.5", "2:4")]
            table.add_row(method, *cells)
        console.print(table)
    if smol.get("finetune"):
        table = Table(title="after the pruning-aware fine-tune")
        for column in ("start", "pattern", "before", "after", "s/step"):
            table.add_column(column)
        for r in smol["finetune"]:
            table.add_row(r["start"], r["pattern"] or "dense", f"{r['perplexity_before']:.2f}", f"{r['perplexity_after']:.2f}", f"{r['seconds_per_step']:.1f}")
        console.print(table)
    if results.get("minilm"):
        table = Table(title="MiniLM-L6, mean cosine of held-out speech embeddings to the dense model's")
        table.add_column("method")
        table.add_column("50% unstructured", justify="right")
        table.add_column("2:4", justify="right")
        for method in METHODS:
            cells = [next((f"{r['mean_cosine']:.4f}" for r in results["minilm"]["rows"] if r["method"] == method and r["pattern"] == p), "-") for p in ("0.5", "2:4")]
            table.add_row(method, *cells)
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=256, help="tokens per evaluation and calibration window")
    parser.add_argument("--eval-windows", type=int, default=16, help="held-out windows, evenly spaced over the held-out plays")
    parser.add_argument("--eval-batch", type=int, default=4)
    parser.add_argument("--calibration", type=int, default=32, help="calibration windows from the training plays")
    parser.add_argument("--calibration-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40, help="fine-tune steps per start ")
    parser.add_argument("--batch", type=int, default=2, help="fine-tune windows per step")
    parser.add_argument("--finetune-seq", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--finetune-pattern", default="0.5", help="which one-shot pattern to fine-tune from: 0.5 or 2:4")
    parser.add_argument("--minilm-eval", type=int, default=256, help="held-out speeches embedded")
    parser.add_argument("--minilm-calibration", type=int, default=128, help="training speeches for calibration")
    parser.add_argument("--stages", default="oneshot,minilm,finetune", help="comma-separated: oneshot (SmolLM2 table), minilm, finetune")
    parser.add_argument("--finetune-starts", default="calibrated,magnitude,dense",
                        help="comma-separated fine-tune starts: calibrated (the --finetune-from method), magnitude, dense (control)")
    parser.add_argument("--finetune-from", choices=("best", "wanda", "sparsegpt"), default="best",
                        help="the calibrated start to fine-tune (best: lower one-shot perplexity, needs the oneshot stage)")
    parser.add_argument("--out", type=Path, default=Path("runs/llm_prune.json"))
    args = parser.parse_args()
    args.finetune_pattern = float(args.finetune_pattern) if ":" not in args.finetune_pattern else args.finetune_pattern
    args.stages = [stage.strip() for stage in args.stages.split(",")]
    args.finetune_starts = [start.strip() for start in args.finetune_starts.split(",")]
    if set(args.finetune_starts) - {"calibrated", "magnitude", "dense"}:
        parser.error("--finetune-starts: choose from calibrated, magnitude, dense")
    unknown = set(args.stages) - {"oneshot", "minilm", "finetune"}
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from oneshot, minilm, finetune")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads",
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg()[0],
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        results["wall_seconds"] = round(time.perf_counter() - started)
        args.out.write_text(json.dumps(results, indent=2))

    smol = SmolLM(args) if {"oneshot", "finetune"} & set(args.stages) else None
    if "oneshot" in args.stages:
        smollm_one_shot(smol, results, save)
    if "minilm" in args.stages:
        run_minilm(args, results, save)
    if "finetune" in args.stages:
        smollm_finetune(smol, results, save)
    results["load_average_at_end"] = os.getloadavg()[0]
    save()
    print_tables(results)
    console.print(f"wall time {results['wall_seconds'] / 60:.1f} min; results in {args.out}")


if __name__ == "__main__":
    main()
