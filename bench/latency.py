"""Latency harness: dense and pruned models side by side, per batch size, at a fixed thread count.

For each batch size every variant gets a warm-up, then timed forwards in interleaved rounds
(``pruneaware.measure.compare_latency``), so load or clock drift hits all variants alike. Printed
per variant: median ms and the p10-p90 spread, the measured speedup over the first variant (median
of ratios of forwards timed in the same round), and the MACs ratio (the first variant's dense MACs
over the MACs a perfect sparse kernel would run for this variant), which is what the speedup would
be if time fell exactly with MACs. Timings are only meaningful on an otherwise idle machine, so the
harness waits (up to ``--quiet-wait`` seconds) for the CPUs to be idle before measuring and reports
the share of CPU time other processes used while it measured (from /proc/stat, on Linux).

Run on its own, it times a model from ``pruneaware.models``: dense, the same weights pruned
one-shot by pruneaware (per-layer magnitude) with dense kernels, and that pruned model converted
by ``pruneaware.export.to_sparse`` for each batch size:

    python bench/latency.py [--model mlp] [--input 784] [--hidden 1024 1024] [--sparsity 0.9] [--batch 1 64] [--threads 2] [--quiet-wait 120]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import pruneaware as pa
from pruneaware.export import to_sparse
from pruneaware.measure import compare_latency, count_macs
from pruneaware.models import build_model


@dataclass(frozen=True)
class Row:
    """One variant at one batch size: latency, spread, speedup over the first variant, and MACs ratio."""

    variant: str
    batch: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    speedup: float
    macs_ratio: float
    others_cpu: float | None


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat; None where it does not exist."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@contextmanager
def others_cpu_share() -> Iterator[list[float]]:
    """Measure the share of all CPU time that other processes used during the block (appended to the list)."""
    share: list[float] = []
    before, own_before = _cpu_jiffies(), os.times()
    yield share
    after, own_after = _cpu_jiffies(), os.times()
    if before is None or after is None or after[1] == before[1]:
        return
    ticks = os.sysconf("SC_CLK_TCK")
    own = (own_after.user + own_after.system) - (own_before.user + own_before.system)
    others = max(0.0, (after[0] - before[0]) / ticks - own)
    share.append(others / ((after[1] - before[1]) / ticks))


def wait_for_quiet(limit_s: float, threshold: float = 0.05, window_s: float = 3.0) -> float | None:
    """Wait until other processes use under ``threshold`` of the CPUs over ``window_s``, at most ``limit_s``;
    return the last share seen (None without /proc/stat)."""
    deadline = time.monotonic() + limit_s
    while True:
        with others_cpu_share() as share:
            time.sleep(window_s)
        if not share or share[0] < threshold or time.monotonic() >= deadline:
            return share[0] if share else None


def side_by_side(
    variants: Mapping[str, nn.Module],
    example_input: Tensor,
    *,
    macs_models: Mapping[str, nn.Module] | None = None,
    threads: int = 2,
    warmup: int = 5,
    repeats: int = 60,
    rounds: int = 30,
) -> list[Row]:
    """Time ``variants`` in interleaved rounds on ``example_input``; speedups and MACs ratios relative to the first.

    MACs are counted on ``macs_models[name]`` where given (a model with the same weights that the
    FLOP counter understands, e.g. the masked model behind a sparse-kernel one), else on the variant.
    """
    macs_models = macs_models or {}
    with others_cpu_share() as others:
        reports = compare_latency(variants, example_input, warmup=warmup, repeats=repeats, threads=threads, rounds=rounds)
    others_cpu = others[0] if others else None
    base_name = next(iter(variants))
    base = reports[base_name]
    dense_macs = count_macs(macs_models.get(base_name, variants[base_name]), example_input).dense
    rows = []
    for name, report in reports.items():
        effective = count_macs(macs_models.get(name, variants[name]), example_input).effective
        paired = statistics.median(b / v for b, v in zip(base.samples_ms, report.samples_ms))
        rows.append(
            Row(
                name, report.batch_size, report.median_ms, report.p10_ms, report.p90_ms, paired,
                dense_macs / effective, others_cpu,
            )
        )
    return rows


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| variant | batch | median ms | p10–p90 ms | speedup (measured) | MACs ratio | other processes' CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.variant} | {row.batch} | {row.median_ms:.3f} | {row.p10_ms:.3f}–{row.p90_ms:.3f} "
            f"| {row.speedup:.2f}x | {row.macs_ratio:.2f}x | {percent(row.others_cpu)} |"
        )
    return "\n".join(lines)


def percent(share: float | None) -> str:
    """'3%', or 'n/a' where it could not be measured."""
    return "n/a" if share is None else f"{share:.0%}"


def prune(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy of ``model`` with ``sparsity`` of every Linear and convolution weight zeroed by pruneaware (magnitude, per layer)."""
    pruned = copy.deepcopy(model)
    recipe = pa.Recipe.from_dict(
        {
            "pruning": {
                "schedule": {"type": "one_shot", "sparsity": sparsity, "at": 0, "unit": "step"},
                "granularity": {"type": "element", "scope": "layer"},
            },
            "scope": {"modules": ["Linear", "Conv1d", "Conv2d"], "skip_last": False},
        }
    )
    pa.Pruner(pruned, None, recipe, total_steps=1).finalize()
    return pruned.eval()


def environment(threads: int) -> str:
    """One line naming what the numbers were measured with."""
    return f"torch {torch.__version__}, {threads} threads, {platform.machine()} with {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", help="a pruneaware.models name (mlp, lenet300_100, cnn1d, lenet5, resnet20)")
    parser.add_argument("--input", nargs="+", type=int, default=[784], help="input shape without the batch dimension")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--hidden", nargs="+", type=int, default=[1024, 1024], help="hidden widths (mlp only)")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=60, help="timed forwards per variant and batch size")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds the repeats are spread over")
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="seconds to wait for idle CPUs per batch size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    options = {"hidden": tuple(args.hidden)} if args.model == "mlp" else {}
    dense = build_model(args.model, tuple(args.input), args.classes, **options).eval()
    masked = prune(dense, args.sparsity)
    print(f"{args.model} {tuple(args.input)}, {args.sparsity:.0%} of every layer's weights pruned; {environment(args.threads)}")
    rows = []
    for batch in args.batch:
        wait_for_quiet(args.quiet_wait)
        example = torch.randn(batch, *args.input)
        conversion = to_sparse(masked, example, threads=args.threads)
        print(f"batch {batch}, per-layer decisions:\n{conversion}")
        variants = {"dense": dense, "pruned, dense kernels": masked, "pruned, to_sparse": conversion.model}
        macs_models = {"pruned, to_sparse": masked}
        rows += side_by_side(
            variants, example, macs_models=macs_models, threads=args.threads, repeats=args.repeats, rounds=args.rounds
        )
    print(table(rows))


if __name__ == "__main__":
    main()
