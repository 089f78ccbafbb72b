"""Movement vs magnitude pruning of the pretrained MiniLM-L6 sentence encoder, distilled into its dense self.

Every Linear of the encoder's transformer layers (attention q/k/v/output and the FFN) is pruned to
each target sparsity by: one-shot magnitude, Wanda or SparseGPT (no training); or, with
distillation, gradual magnitude, a random ranking on the same ramp (the control), hard movement
with accumulated scores, top-k movement with learned scores, and soft movement (its sparsity is
whatever its regularizer strength gives; the table shows the one reached). Distillation: ``1 - cos`` between the student's
and the dense teacher's embeddings on passages of the training plays; the score is the mean cosine
similarity on passages of the held-out plays, never trained on. Every trained method gets the same
steps, batches, optimizer and learning rate.

    python examples/movement_minilm.py                              # every method but the dense control (docs/movement.md)
    python examples/movement_minilm.py --steps 40 --sparsities 0.5 --methods gmp movement
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: the pretrained model is an asset
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # noqa: E402
from rich.table import Table  # noqa: E402

import pruneaware as pa  # noqa: E402
from pruneaware.llm import parse_target, sparsegpt_prune, wanda_prune  # noqa: E402
from pruneaware.methods.gmp import gradual_magnitude  # noqa: E402
from pruneaware.methods.movement import movement_pruning, soft_movement, topk_movement  # noqa: E402
from pruneaware.text import ENCODER_SCOPE, distill, embed_batches, load_encoder, mean_cosine, prune_without_training, shakespeare_passages, token_batches  # noqa: E402

METHODS = {
    "dense": "dense + distillation (control, nothing pruned)",
    "one_shot": "one-shot magnitude (no training)",
    "wanda": "one-shot Wanda (no training)",
    "sparsegpt": "one-shot SparseGPT (no training)",
    "gmp": "gradual magnitude + distillation",
    "movement": "hard movement, accumulated scores + distillation",
    "topk": "top-k movement, learned scores + distillation",
    "soft": "soft movement + distillation",
    "random": "random ranking + distillation (control)",
    "taylor": "Taylor, unsigned (abs of the summed W * dL/dW since the last update) + distillation",
}
TRAINED = ("dense", "gmp", "movement", "topk", "soft", "random", "taylor")
CALIBRATED = ("wanda", "sparsegpt")
NM_METHODS = ("one_shot", "wanda", "sparsegpt")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of every trained method")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9], help="targets for the hard-target methods")
    parser.add_argument("--soft-strengths", type=float, nargs="+", default=[25.0, 45.0, 85.0], help="soft movement regularizer strength, one per sparsity (the defaults land near 50, 70 and 90%%)")
    parser.add_argument("--soft-lr", type=float, default=0.05, help="learning rate of soft movement's scores (Adam)")
    parser.add_argument("--topk-lr", type=float, default=0.01, help="learning rate of top-k movement's scores (Adam)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=[m for m in METHODS if m not in ("dense", "taylor")])
    parser.add_argument("--nm", action="store_true", help="also one-shot 2:4 (magnitude, Wanda, SparseGPT)")
    parser.add_argument("--calibration", type=int, default=128, help="training passages Wanda and SparseGPT read")
    parser.add_argument("--allocation", choices=["layer", "global"], default="layer", help="top-k per layer (the paper's) or over all layers")
    parser.add_argument("--seed", type=int, default=0, help="passages drawn and dropout")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=32, help="tokens per passage (the median passage has 32)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of the weights, decaying linearly to 0")
    parser.add_argument("--no-dropout", action="store_true", help="train the student without dropout (it then starts with zero gradients)")
    parser.add_argument("--eval-passages", type=int, default=256, help="held-out passages scored")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="folder for table.md and results.json (default runs/movement-minilm-<time>)")
    args = parser.parse_args()
    if "soft" not in args.methods:
        args.soft_strengths = [0.0] * len(args.sparsities)
    elif len(args.soft_strengths) != len(args.sparsities):
        parser.error(f"--soft-strengths needs one value per sparsity ({len(args.sparsities)}), got {len(args.soft_strengths)}")
    args.out = args.out or Path("runs") / f"movement-minilm-{datetime.now():%Y%m%d-%H%M%S}"
    return args


def recipe_for(method: str, sparsity: float | str, strength: float, args: argparse.Namespace) -> pa.Recipe:
    """The library recipe of one method at one target (a fraction, or "2:4"), pruning only the encoder's Linears."""
    ramp = {"begin": 0.1, "end": 0.7, "every": 0.05}
    if method == "dense":
        recipe = gradual_magnitude(0.0, **ramp).to_dict()  # a schedule that never prunes: the same training, nothing removed
    elif method == "one_shot":
        granularity = sparsity if isinstance(sparsity, str) else {"type": "element", "scope": args.allocation}
        schedule = {"type": "one_shot", "sparsity": parse_target(sparsity).sparsity, "at": 0, "unit": "step"}
        recipe = {"name": "one-shot", "pruning": {"schedule": schedule, "granularity": granularity}}
    elif method in ("gmp", "random", "taylor"):
        recipe = gradual_magnitude(sparsity, allocation=args.allocation, **ramp).to_dict()
        recipe["pruning"]["criterion"] = {"gmp": "magnitude", "random": "random", "taylor": "taylor"}[method]  # the same ramp, another ranking
    elif method == "movement":
        recipe = movement_pruning(sparsity, allocation=args.allocation, **ramp).to_dict()
    elif method == "topk":
        recipe = topk_movement(sparsity, allocation=args.allocation, lr=args.topk_lr, **ramp).to_dict()
    else:
        recipe = soft_movement(strength, lr=args.soft_lr).to_dict()
    return pa.Recipe.from_dict({**recipe, "scope": ENCODER_SCOPE})


def planned_runs(args: argparse.Namespace) -> list[tuple[str, float | str, float]]:
    """(method, target, soft strength) for every cell of the table, target by target."""
    runs = [("dense", 0.0, 0.0)] if "dense" in args.methods else []
    runs += [(method, sparsity, strength) for sparsity, strength in zip(args.sparsities, args.soft_strengths) for method in args.methods if method != "dense"]
    if args.nm:
        runs += [(method, "2:4", 0.0) for method in NM_METHODS if method in args.methods]
    return runs


def prune_one(method: str, target: float | str, strength: float, student: torch.nn.Module, data: dict, args: argparse.Namespace, on_step) -> None:
    """Prune ``student`` in place by ``method``: a recipe through the Pruner (distilled or not), or Wanda/SparseGPT on calibration batches."""
    if method == "wanda":
        wanda_prune(student, data["calibration"], target)
    elif method == "sparsegpt":
        sparsegpt_prune(student, data["calibration"], target)
    elif method in TRAINED:
        recipe = recipe_for(method, target, strength, args)
        distill(student, recipe, data["train"], data["train_targets"], lr=args.lr, dropout=not args.no_dropout, on_step=on_step)
    else:
        prune_without_training(student, recipe_for(method, target, strength, args))


def encoder_sparsity(model: torch.nn.Module) -> float:
    """Fraction of zeros over the weights in the encoder scope, counted from the weights."""
    weights = pa.Recipe.from_dict({"regularizer": {"type": "l1", "strength": 1.0}, "scope": ENCODER_SCOPE}).scope.build().select(model).values()
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    console = Console()
    started = time.perf_counter()
    teacher, tokenizer = load_encoder()
    train_texts = shakespeare_passages("train", args.steps * args.batch_size, seed=args.seed)
    heldout_texts = shakespeare_passages("heldout", args.eval_passages, seed=args.seed)
    data = {
        "train": token_batches(tokenizer, train_texts, args.batch_size, args.max_length)[: args.steps],
        "calibration": token_batches(tokenizer, train_texts[: args.calibration], args.batch_size, args.max_length),
        "heldout": token_batches(tokenizer, heldout_texts, 32, args.max_length),
    }
    runs = planned_runs(args)
    results = []
    columns = (TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("all distillation steps", total=sum(args.steps for method, _, _ in runs if method in TRAINED))
        targets_task = progress.add_task("teacher targets (batches)", total=len(data["train"]) + len(data["heldout"]))
        data["train_targets"] = embed_batches_with(progress, targets_task, teacher, data["train"])
        data["heldout_targets"] = embed_batches_with(progress, targets_task, teacher, data["heldout"])
        for method, target, strength in runs:
            label = f"soft strength {strength:g}" if method == "soft" else f"{method} {parse_target(target)}"
            task = progress.add_task(label, total=args.steps if method in TRAINED else 1)
            student = copy.deepcopy(teacher)
            student.embeddings.requires_grad_(False)  # not pruned; frozen to save the optimizer's time
            torch.manual_seed(args.seed)
            run_started = time.perf_counter()
            prune_one(method, target, strength, student, data, args, advance(progress, task, overall))
            if method not in TRAINED:
                progress.advance(task)
            cosine = mean_cosine(student, data["heldout"], data["heldout_targets"])
            results.append(
                {
                    "method": method,
                    "target": target if method != "soft" else None,
                    "soft_strength": strength if method == "soft" else None,
                    "sparsity": encoder_sparsity(student),
                    "cosine": cosine,
                    "seconds": time.perf_counter() - run_started,
                }
            )
            progress.update(task, description=f"{label}: cos {cosine:.4f}")
            write_outputs(args, results, time.perf_counter() - started, console, final=False)
    write_outputs(args, results, time.perf_counter() - started, console, final=True)


def embed_batches_with(progress: Progress, task: int, model: torch.nn.Module, batches: list) -> list[torch.Tensor]:
    """``embed_batches`` one batch at a time, advancing the bar."""
    targets = []
    for batch in batches:
        targets.extend(embed_batches(model, [batch]))
        progress.advance(task)
    return targets


def advance(progress: Progress, task: int, overall: int) -> Callable[[int, float], None]:
    def on_step(step: int, loss: float) -> None:
        progress.update(task, advance=1, description=progress.tasks[task].description.split(" |")[0] + f" | loss {loss:.4f}")
        progress.advance(overall)

    return on_step


def markdown_table(args: argparse.Namespace, results: list[dict]) -> str:
    """Methods as rows, targets as columns: mean cosine similarity to the dense model (soft movement: at the sparsity it reached)."""
    columns = [*args.sparsities, *(["2:4"] if args.nm else [])]
    lines = ["| method | " + " | ".join(str(parse_target(c)) for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for method in args.methods:
        cells = []
        for index, column in enumerate(columns):
            if column == "2:4" or method == "dense":
                wanted = "2:4" if column == "2:4" else 0.0
                row = next((r for r in results if r["method"] == method and r["target"] == wanted), None) if index == 0 or column == "2:4" else None
            else:
                row = next((r for r in results if r["method"] == method and (r["target"] == column or (method == "soft" and r["soft_strength"] == args.soft_strengths[index]))), None)
            if row is None:
                cells.append("-")
            elif method == "soft":
                cells.append(f"{row['cosine']:.4f} (at {row['sparsity']:.1%}, strength {row['soft_strength']:g})")
            else:
                cells.append(f"{row['cosine']:.4f}" + ("" if column == "2:4" or abs(row["sparsity"] - column) < 0.005 else f" (at {row['sparsity']:.1%})"))
        lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(args: argparse.Namespace, results: list[dict], wall: float, console: Console, *, final: bool) -> None:
    """results.json and table.md in the output folder (rewritten after every run); the table on the terminal at the end."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, torch {torch.__version__}"
    table = markdown_table(args, results)
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    cpu = time.process_time()  # this process's CPU time: on a shared machine the wall time says more about the others
    summary = {"settings": settings, "machine": machine, "wall_seconds": wall, "cpu_seconds": cpu, "runs": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    timing = f"{wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU"
    (out / "table.md").write_text(f"{table}\n\nMean cosine similarity to the dense model on {args.eval_passages} held-out passages; {machine}; {timing}.\n")
    if not final:
        return
    shown = Table(title="cosine similarity to the dense MiniLM-L6 (held-out plays)")
    for header in table.splitlines()[0].strip("|").split("|"):
        shown.add_column(header.strip(), justify="left" if header.strip() == "method" else "right")
    for line in table.splitlines()[2:]:
        shown.add_row(*[cell.strip() for cell in line.strip("|").split("|")])
    console.print(shown)
    console.print(f"{machine}; {timing}; written to {out}/table.md and results.json")


if __name__ == "__main__":
    main()
