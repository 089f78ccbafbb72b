"""Which channel counts run fast: one layer timed at every output width near its full width, on this machine.

Per layer context, every output width from ``full - span + 1`` to ``full`` is timed (interleaved rounds, fastest of
the repeats). A width is *wasted* when some wider width in the sweep runs at most as fast (its removed channels
bought nothing). The table groups widths by the largest of 32, 16, 8 they are a multiple of (or none) and gives, per
group, the share of wasted widths and the mean latency relative to the next multiple of 16 (at or above it). This is the
measurement behind latency allocation's ``round_to: auto``.

    python bench/width_steps.py [--threads 1] [--batch 1] [--repeats 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from pruneaware.hardware.keys import cpu_name

# (name, build(out_width) -> module, input(batch) -> tensor, full width, widths swept below full)
CONTEXTS = [
    ("conv3x3 64->w @56x56 (ResNet-50 layer1)", lambda w: nn.Conv2d(64, w, 3, padding=1, bias=False), lambda b: torch.randn(b, 64, 56, 56), 64, 40),
    ("conv3x3 128->w @28x28 (ResNet-50 layer2)", lambda w: nn.Conv2d(128, w, 3, padding=1, bias=False), lambda b: torch.randn(b, 128, 28, 28), 128, 72),
    ("conv3x3 256->w @14x14 (ResNet-50 layer3)", lambda w: nn.Conv2d(256, w, 3, padding=1, bias=False), lambda b: torch.randn(b, 256, 14, 14), 256, 72),
    ("conv1x1 1024->w @14x14 (ResNet-50 layer3)", lambda w: nn.Conv2d(1024, w, 1, bias=False), lambda b: torch.randn(b, 1024, 14, 14), 256, 72),
    ("conv3x3 16->w @32x32 (ResNet-20 stage 1)", lambda w: nn.Conv2d(16, w, 3, padding=1, bias=False), lambda b: torch.randn(b, 16, 32, 32), 16, 15),
    ("conv3x3 64->w @8x8 (ResNet-20 stage 3)", lambda w: nn.Conv2d(64, w, 3, padding=1, bias=False), lambda b: torch.randn(b, 64, 8, 8), 64, 40),
    ("linear 768->w x197 (ViT-B MLP)", lambda w: nn.Linear(768, w), lambda b: torch.randn(b, 197, 768), 3072, 72),
]
GROUPS = ("x32", "x16", "x8", "other")


def group_of(width: int) -> str:
    """The largest of 32, 16, 8 that divides ``width``, as a label."""
    return next((f"x{step}" for step in (32, 16, 8) if width % step == 0), "other")


def fastest_ms(module: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, in milliseconds (after two warm-up calls)."""
    with torch.inference_mode():
        for _ in range(2):
            module(x)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            best = min(best, time.perf_counter() - start)
    return best * 1e3


def sweep(build, make_input, full: int, span: int, batch: int, repeats: int, rounds: int) -> dict[int, float]:
    """Milliseconds per output width, the fastest over ``rounds`` interleaved passes over all widths."""
    widths = list(range(full - span + 1, full + 1))
    modules = {w: build(w).eval() for w in widths}
    x = make_input(batch)
    times = {w: float("inf") for w in widths}
    for _ in range(rounds):
        for w in widths:
            times[w] = min(times[w], fastest_ms(modules[w], x, repeats))
    return times


def summarize(times: dict[int, float]) -> dict[str, tuple[float, float]]:
    """Per width group: (share of widths no faster than some wider one, mean latency / the next multiple of 16's)."""
    widths = sorted(times)
    rows: dict[str, list[tuple[bool, float]]] = {g: [] for g in GROUPS}
    for w in widths:
        wasted = any(times[v] <= times[w] for v in widths if v > w)
        above = next((v for v in widths if v >= w and v % 16 == 0), None)
        rows[group_of(w)].append((wasted, times[w] / times[above] if above else float("nan")))
    return {g: (statistics.mean(float(a) for a, _ in r), statistics.mean(b for _, b in r)) for g, r in rows.items() if r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {cpu_name()}, {args.threads} threads, batch {args.batch}, load average {os.getloadavg()[0]:.1f}")
    print("\n| layer | full ms | " + " | ".join(f"{g}: wasted, ms / next x16" for g in GROUPS) + " |")
    print("|---|---|" + "---|" * len(GROUPS))
    for name, build, make_input, full, span in CONTEXTS:
        times = sweep(build, make_input, full, span, args.batch, args.repeats, args.rounds)
        summary = summarize(times)
        cells = [f"{100 * summary[g][0]:.0f}%, {summary[g][1]:.2f}" if g in summary else "—" for g in GROUPS]
        print(f"| {name} | {times[full]:.3f} | " + " | ".join(cells) + " |", flush=True)
    print(f"<!-- load average at end {os.getloadavg()[0]:.1f} -->")


if __name__ == "__main__":
    main()
