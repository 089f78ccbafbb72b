"""Training-step cost of pruning: dense vs pruneaware masks vs torch.nn.utils.prune, side by side.

All three train the same ResNet-20 from the same weights with the same 90% masks (global magnitude)
on the same batches, one step of each in turn, so machine drift hits every variant alike.

    python bench/train_step.py [--batch 64] [--steps 150] [--threads 2]
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
    parser.add_argument("--steps", type=int, default=150, help="timed steps per variant, interleaved")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    base = build_model("resnet20", (3, 32, 32), 10)
    batches = [(torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))) for _ in range(4)]
    steps = variants(base, batches, args.sparsity)
    names = list(steps)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for index in range(5):  # warm-up
        for step in steps.values():
            step(index)
    for index in range(args.steps):
        for offset in range(len(names)):  # rotate the order so no variant always runs first
            name = names[(index + offset) % len(names)]
            started = time.perf_counter()
            steps[name](index)
            timings[name].append(time.perf_counter() - started)
    print(f"ResNet-20, batch {args.batch}, 3x32x32, SGD momentum, {args.sparsity:.0%} global magnitude masks")
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, {args.steps} interleaved steps per variant")
    print(f"{'variant':<22} {'median ms/step':>15} {'p10':>8} {'p90':>8} {'paired ratio vs dense':>22}")
    for name in names:
        ordered = sorted(timings[name])
        p10, p90 = ordered[len(ordered) // 10], ordered[(9 * len(ordered)) // 10]
        ratio = paired_ratio(timings[name], timings["dense"])
        print(f"{name:<22} {1e3 * statistics.median(ordered):>15.2f} {1e3 * p10:>8.2f} {1e3 * p90:>8.2f} {ratio:>21.3f}x")
    ratio = paired_ratio(timings["pruneaware"], timings["torch.nn.utils.prune"])
    print(f"pruneaware / torch.nn.utils.prune (paired): {ratio:.3f}x")


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of step-by-step ratios: steps run back to back share the machine's state, so drift cancels."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


if __name__ == "__main__":
    main()
