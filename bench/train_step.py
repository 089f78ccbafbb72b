"""Training-step cost of pruning: dense vs pruneaware masks vs torch.nn.utils.prune, side by side.

All three train the same ResNet-20 from the same weights with the same 90% masks (global magnitude)
on the same batches; rounds are interleaved so machine drift hits every variant alike.

    python bench/train_step.py [--batch 64] [--steps 30] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.utils.prune as torch_prune
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.models import build_model


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[int], None]:
    def step(index: int) -> None:
        inputs, targets = batches[index % len(batches)]
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def variants(base: nn.Module, batches: list, sparsity: float) -> dict[str, Callable[[int], None]]:
    def sgd(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    dense = copy.deepcopy(base)
    ours = copy.deepcopy(base)
    ours_optimizer = sgd(ours)
    pruner = pa.Pruner(ours, ours_optimizer, pa.recipes.one_shot(sparsity, at=0, unit="step"))
    theirs = copy.deepcopy(base)
    modules = dict(theirs.named_modules())
    for name in pruner.params:
        torch_prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", pruner.masks[name])
    return {
        "dense": make_step(dense, sgd(dense), batches),
        "pruneaware": make_step(ours, ours_optimizer, batches),
        "torch.nn.utils.prune": make_step(theirs, sgd(theirs), batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    base = build_model("resnet20", (3, 32, 32), 10)
    batches = [(torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))) for _ in range(4)]
    steps = variants(base, batches, args.sparsity)
    timings: dict[str, list[float]] = {name: [] for name in steps}
    for name, step in steps.items():  # warm-up
        for index in range(5):
            step(index)
    for _ in range(args.rounds):
        for name, step in steps.items():
            for index in range(args.steps):
                started = time.perf_counter()
                step(index)
                timings[name].append(time.perf_counter() - started)
    dense = statistics.median(timings["dense"])
    print(f"ResNet-20, batch {args.batch}, 3x32x32, SGD momentum, {args.sparsity:.0%} global magnitude masks")
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, {args.rounds}x{args.steps} steps per variant")
    print(f"{'variant':<22} {'median ms/step':>15} {'p10':>8} {'p90':>8} {'vs dense':>9}")
    for name, values in timings.items():
        ordered = sorted(values)
        median = statistics.median(values)
        p10, p90 = ordered[len(ordered) // 10], ordered[(9 * len(ordered)) // 10]
        print(f"{name:<22} {1e3 * median:>15.2f} {1e3 * p10:>8.2f} {1e3 * p90:>8.2f} {median / dense:>8.3f}x")
    ours, theirs = statistics.median(timings["pruneaware"]), statistics.median(timings["torch.nn.utils.prune"])
    print(f"pruneaware / torch.nn.utils.prune: {ours / theirs:.3f}x")


if __name__ == "__main__":
    main()
