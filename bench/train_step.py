"""Training-step cost of pruning masks: dense vs pruneaware vs torch.nn.utils.prune, side by side.

Two cases, each trained several ways from the same weights on the same batches, one step of each
in turn (rotating the order), so machine drift hits every variant alike:

- ``resnet20``: ResNet-20 (3x32x32, batch 64), SGD with momentum, 90% global magnitude masks;
- ``transformer``: a 4-layer ``nn.TransformerEncoder`` (d_model 256, 8 heads, FFN 1024, no dropout,
  batch 16 x 32 tokens, MSE to random targets), AdamW (torch's default implementation, and
  ``fused=True``), 90% magnitude masks on every Linear of every layer, attention ``out_proj`` included.

Each step is split with optimizer step hooks into forward+backward, the pruner's hooks, and the
optimizer's own update, so an overhead can be traced to where it is paid.

    python bench/train_step.py [--cases resnet20 transformer] [--steps 60] [--threads 1]
    python bench/train_step.py --baseline-ref <git rev>   # this tree's masked step vs that revision's
    python bench/train_step.py --baseline-ref <git rev> --baseline-src <folder>   # that revision's src/ extracted there
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.utils.prune as torch_prune
from baseline import compare_with_revision, paired_ratio, serve
from latency import environment, others_cpu_share, percent
from torch import Tensor, nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.models import build_model

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Case:
    """A model, its batches and loss, the optimizers to time it with, and the pruning recipe."""

    title: str
    build: Callable[[], nn.Module]
    batches: list[Batch]
    loss: Callable[[Tensor, Tensor], Tensor]
    optimizers: dict[str, Callable[[nn.Module], torch.optim.Optimizer]]
    recipe: pa.Recipe


def resnet20() -> Case:
    batches = [(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))) for _ in range(4)]
    recipe = pa.methods.one_shot(0.9, at=0, unit="step")
    sgd = {"SGD momentum": lambda model: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)}
    return Case("ResNet-20, batch 64, 3x32x32, 90% global magnitude masks", lambda: build_model("resnet20", (3, 32, 32), 10), batches, F.cross_entropy, sgd, recipe)


def transformer() -> Case:
    def build() -> nn.Module:
        layer = nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True)
        return nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)

    batches = [(torch.randn(16, 32, 256), torch.randn(16, 32, 256)) for _ in range(4)]
    recipe = pa.Recipe.from_dict({
        "name": "one_shot_every_linear",
        "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.9, "at": 0, "unit": "step"}, "criterion": "magnitude", "granularity": {"type": "element", "scope": "layer"}},
        "scope": {"skip_last": False},
    })
    adamw = {
        "AdamW": lambda model: torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01),
        "AdamW fused": lambda model: torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True),
    }
    return Case("TransformerEncoder 4x(d256, 8 heads, FFN 1024), batch 16x32 tokens, 90% masks on every Linear", build, batches, F.mse_loss, adamw, recipe)


CASES = {"resnet20": resnet20, "transformer": transformer}


class StepClock:
    """Optimizer step hooks around the pruner's own: split each step into forward+backward, pruner hooks and optimizer update."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.parts: dict[str, list[float]] = {"total": [], "hooks": [], "update": []}

    def mark(self, name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            self.marks[name] = time.perf_counter()

        return hook

    def record(self, started: float, ended: float) -> None:
        m = self.marks
        self.parts["total"].append(ended - started)
        self.parts["hooks"].append((m["pre_end"] - m["pre_start"]) + (m["post_end"] - m["post_start"]))
        self.parts["update"].append(m["post_start"] - m["pre_end"])


def make_step(case: Case, model: nn.Module, optimizer_name: str, prune: str | None) -> tuple[Callable[[int], None], StepClock]:
    """One timed training step of ``model``: dense (``prune=None``), masked by pruneaware, or by torch.nn.utils.prune."""
    optimizer = case.optimizers[optimizer_name](model)
    clock = StepClock()
    optimizer.register_step_pre_hook(clock.mark("pre_start"))
    optimizer.register_step_post_hook(clock.mark("post_start"))
    if prune == "pruneaware":
        pa.Pruner(model, optimizer, case.recipe)
    elif prune is not None:  # the masks pruneaware would set, enforced by torch.nn.utils.prune
        masks = pa.Pruner(copy.deepcopy(model), None, case.recipe).masks
        modules = dict(model.named_modules())
        for name in masks:
            torch_prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", masks[name])
    optimizer.register_step_pre_hook(clock.mark("pre_end"))
    optimizer.register_step_post_hook(clock.mark("post_end"))

    def step(index: int) -> None:
        inputs, targets = case.batches[index % len(case.batches)]
        started = time.perf_counter()
        loss = case.loss(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clock.record(started, time.perf_counter())

    return step, clock


Variants = dict[str, tuple[Callable[[int], None], StepClock]]


def build_variants(case: Case, libraries: tuple[str, ...], optimizers: int | None = None) -> tuple[Variants, dict[str, str]]:
    """Per optimizer (the first ``optimizers`` of the case): dense, then each masking library (after the first optimizer,
    pruneaware alone); a variant that cannot train is dropped with its error."""
    torch.manual_seed(0)
    base = case.build()
    variants: Variants = {}
    failures: dict[str, str] = {}
    for position, optimizer_name in enumerate(list(case.optimizers)[:optimizers]):
        for library in ("dense", *(libraries if position == 0 else libraries[:1])):  # others: pruneaware alone
            name = f"{library} ({optimizer_name})"
            step, clock = make_step(case, copy.deepcopy(base), optimizer_name, None if library == "dense" else library)
            try:
                for index in range(3):  # warm-up
                    step(index)
            except RuntimeError as error:
                failures[name] = str(error).split(" (")[0]  # its first clause; the rest is torch's generic advice
                continue
            clock.parts = {part: [] for part in clock.parts}
            variants[name] = (step, clock)
    return variants, failures


def run_interleaved(steps: dict[str, Callable[[int], None]], count: int) -> None:
    names = list(steps)
    for index in range(count):
        for offset in range(len(names)):  # rotate the order so no variant always runs first
            steps[names[(index + offset) % len(names)]](index)


def sqrt_cost_on_zeros(size: int = 1 << 20, repeats: int = 30) -> tuple[float, float]:
    """Median ms of ``torch.sqrt`` over ``size`` exact zeros and over as many positive floats, interleaved."""
    zeros, positives, out = torch.zeros(size), torch.rand(size) + 1e-3, torch.empty(size)
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeats):
        for key, values in enumerate((zeros, positives)):
            started = time.perf_counter()
            torch.sqrt(values, out=out)
            times[key].append(time.perf_counter() - started)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1])


def report(case: Case, variants: Variants, failures: dict[str, str], steps: int, others: str) -> None:
    print(f"\n{case.title}; {steps} interleaved steps per variant; other processes' CPU: {others}")
    print("| variant | median ms/step | p10 | p90 | ratio vs dense (paired) | pruner hooks ms | optimizer update ms |")
    print("|---|---|---|---|---|---|---|")
    for name, (_, clock) in variants.items():
        total = sorted(clock.parts["total"])
        dense = variants[f"dense ({name.split(' (', 1)[1]}"][1].parts["total"]
        p10, p90 = total[len(total) // 10], total[(9 * len(total)) // 10]
        ratio = paired_ratio(clock.parts["total"], dense)
        hooks, update = (1e3 * statistics.median(clock.parts[part]) for part in ("hooks", "update"))
        print(f"| {name} | {1e3 * statistics.median(total):.2f} | {1e3 * p10:.2f} | {1e3 * p90:.2f} | {ratio:.3f}x | {hooks:.2f} | {update:.2f} |")
    for name, error in failures.items():
        print(f"| {name} | cannot train: {error} | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant, interleaved")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline-ref", help="also time this git revision's masked step against this tree's (see bench/baseline.py)")
    parser.add_argument("--baseline-src", type=Path, help="a folder holding --baseline-ref's src/ already extracted (no git needed)")
    parser.add_argument("--worker", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.worker:
        serve(build_variants(CASES[args.worker](), ("pruneaware",), optimizers=1)[0])
        return
    print(environment(args.threads))
    for name in args.cases:
        case = CASES[name]()
        variants, failures = build_variants(case, ("pruneaware", "torch.nn.utils.prune"))
        with others_cpu_share() as others:
            run_interleaved({name: step for name, (step, _) in variants.items()}, args.steps)
        report(case, variants, failures, args.steps, percent(others[0] if others else None))
        if name == "transformer":
            zeros, positives = sqrt_cost_on_zeros()
            print(f"torch.sqrt over 2^20 float32: {zeros:.3f} ms on exact zeros, {positives:.3f} ms on positive values")
    if args.baseline_ref:
        compare_with_revision(args.baseline_ref, args.cases, args.steps, args.threads, args.baseline_src)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
