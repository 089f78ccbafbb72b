"""Training-step cost of the dynamic methods: plain masks vs DNS splicing vs RigL regrowth, side by side.

Every variant trains the same model from the same weights at the same sparsity on the same batches,
one step of each in turn. Splicing adds a restore before and a copy after every step; RigL adds a
dense-gradient capture and a drop-and-grow at its update steps (here every ``--every`` steps).

    python bench/method_step.py [--model lenet300_100|resnet20] [--batch 64] [--steps 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.models import build_model

INPUTS = {"lenet300_100": (784,), "resnet20": (3, 32, 32)}


def make_step(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], recipe: pa.Recipe | None, total: int) -> Callable[[int], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if recipe is not None:
        pa.Pruner(model, optimizer, recipe, total_steps=total)

    def step(index: int) -> None:
        inputs, targets = batches[index % len(batches)]
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(INPUTS), default="lenet300_100")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant, interleaved")
    parser.add_argument("--every", type=int, default=100, help="RigL update interval in steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    base = build_model(args.model, INPUTS[args.model], 10)
    batches = [(torch.randn(args.batch, *INPUTS[args.model]), torch.randint(0, 10, (args.batch,))) for _ in range(4)]
    total = args.steps + 10
    recipes = {
        "dense": None,
        "masks": pa.methods.one_shot(args.sparsity, at=0, unit="step"),
        "dns splice": pa.methods.dynamic_surgery(args.sparsity, end=total, every=args.every, unit="step"),
        "rigl": pa.methods.rigl(args.sparsity, end=total, every=args.every, unit="step", allocation="layer"),
    }
    steps = {name: make_step(copy.deepcopy(base), batches, recipe, total) for name, recipe in recipes.items()}
    names = list(steps)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for index in range(5):  # warm-up
        for step in steps.values():
            step(index)
    for index in range(args.steps):
        for offset in range(len(names)):  # rotate the order so no variant always runs first
            name = names[(index + offset) % len(names)]
            started = time.perf_counter()
            steps[name](index + 5)
            timings[name].append(time.perf_counter() - started)
    print(f"{args.model}, batch {args.batch}, SGD momentum, {args.sparsity:.0%} sparse, RigL/DNS mask updates every {args.every} steps")
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, {args.steps} interleaved steps per variant")
    print(f"{'variant':<12} {'median ms/step':>15} {'mean ms/step':>13} {'paired ratio vs masks':>22}")
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(timings[name], timings["masks"]))
        print(f"{name:<12} {1e3 * statistics.median(timings[name]):>15.3f} {1e3 * statistics.mean(timings[name]):>13.3f} {ratio:>21.3f}x")


if __name__ == "__main__":
    main()
