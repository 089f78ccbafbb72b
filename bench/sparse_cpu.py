"""Does unstructured sparsity buy CPU speed once pruneaware.export.to_sparse swaps in sparse kernels?

Two Linear-heavy models, each pruned one-shot by pruneaware (per-layer magnitude, every Linear at
the same sparsity) at 80/90/95/98%: an MLP 1024→4096→4096→1024 (ReLU) and a transformer MLP block
(LayerNorm, Linear 768→3072, GELU, Linear 3072→768, residual) on (batch, 1, 768) inputs, one token
per sequence. For each sparsity and batch size, ``to_sparse`` converts the pruned model for that
input shape (per-layer kernels chosen by timing), then the dense-kernel pruned model and the
converted one are timed side by side in interleaved rounds (bench/latency.py). Printed: per-layer
decisions with every kernel's time, then end-to-end speedup next to the ideal 1/(1-s). Each case
first waits for idle CPUs (``--quiet-wait``) and reports the CPU share other processes took during
it (decisions and timing); a case disturbed by more than 5% is measured again (``--attempts``), and
the table keeps the last attempt with its share.

    python bench/sparse_cpu.py [--sparsity 0.8 0.9 0.95 0.98] [--batch 1 64] [--threads 2] [--repeats 40]
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable

import torch
from latency import Row, environment, others_cpu_share, percent, prune, side_by_side, wait_for_quiet
from torch import Tensor, nn

from pruneaware.export import ConversionReport, to_sparse

GOALS = {0.9: 1.7, 0.95: 3.5}
"""End-to-end speedup goals per sparsity."""
QUIET = 0.05
"""A case is measured again (up to ``--attempts`` times) when other processes took more of the CPUs than this."""


class MLPBlock(nn.Module):
    """A transformer MLP block: LayerNorm, Linear-GELU-Linear, residual."""

    def __init__(self, width: int = 768, hidden: int = 3072):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


def mlp() -> nn.Module:
    """MLP 1024→4096→4096→1024 with ReLU."""
    return nn.Sequential(
        nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1024)
    )


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[int], Tensor]]] = {
    "MLP 1024→4096→4096→1024": (mlp, lambda batch: torch.randn(batch, 1024)),
    "transformer MLP block 768→3072→768": (MLPBlock, lambda batch: torch.randn(batch, 1, 768)),
}


def decisions(conversion: ConversionReport) -> str:
    """Per-layer lines with the median ms of dense and of every kernel tried."""
    lines = []
    for decision in conversion.layers:
        times = ", ".join(f"{kernel} {ms:.3f}" for kernel, ms in decision.timings_ms.items())
        lines.append(f"  {decision.line()}" + (f"  [ms: {times}]" if times else ""))
    return "\n".join(lines)


def measure_case(
    masked: nn.Module, example: Tensor, args: argparse.Namespace
) -> tuple[ConversionReport, Row, Row, float | None]:
    """Convert ``masked`` for ``example`` and time it against the dense-kernel model; with the CPU share others took."""
    with others_cpu_share() as others:
        conversion = to_sparse(
            masked, example, threads=args.threads, repeats=args.decide_repeats, rounds=min(4, args.decide_repeats)
        )
        dense_row, sparse_row = side_by_side(
            {"dense": masked, "sparse": conversion.model},
            example,
            macs_models={"sparse": masked},
            threads=args.threads,
            repeats=args.repeats,
            rounds=args.rounds,
        )
    return conversion, dense_row, sparse_row, others[0] if others else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", nargs="+", type=float, default=[0.8, 0.9, 0.95, 0.98])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40, help="timed forwards per variant, end to end")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds the repeats are spread over")
    parser.add_argument("--decide-repeats", type=int, default=12, help="to_sparse: timed calls per kernel and layer")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="seconds to wait for idle CPUs per case")
    parser.add_argument("--attempts", type=int, default=3, help="measure a case again while others took > 5%% CPU")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"date {datetime.date.today()}, {environment(args.threads)}")
    results = []
    for model_name in args.models:
        build, make_input = MODELS[model_name]
        torch.manual_seed(0)
        dense = build().eval()
        for sparsity in args.sparsity:
            masked = prune(dense, sparsity)
            for batch in args.batch:
                torch.manual_seed(1)
                example = make_input(batch)
                for attempt in range(1, args.attempts + 1):
                    wait_for_quiet(args.quiet_wait)
                    conversion, dense_row, sparse_row, others = measure_case(masked, example, args)
                    share = percent(others)
                    print(f"{model_name}, {sparsity:.0%}, batch {batch}, attempt {attempt} (other processes' CPU: {share}):")
                    print(decisions(conversion), flush=True)
                    if others is None or others <= QUIET:
                        break
                with torch.no_grad():
                    difference = float((conversion.model(example) - masked(example)).abs().max())
                kernels = ", ".join(d.kernel or "dense" for d in conversion.layers)
                results.append((model_name, sparsity, batch, dense_row, sparse_row, kernels, difference, share))
    print()
    print("| model | sparsity | batch | dense ms (p10–p90) | sparse ms (p10–p90) | speedup | ideal 1/(1-s) | MACs ratio | kernels per layer | max abs diff | other CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model_name, sparsity, batch, dense_row, sparse_row, kernels, difference, share in results:
        print(
            f"| {model_name} | {sparsity:.0%} | {batch} "
            f"| {dense_row.median_ms:.3f} ({dense_row.p10_ms:.3f}–{dense_row.p90_ms:.3f}) "
            f"| {sparse_row.median_ms:.3f} ({sparse_row.p10_ms:.3f}–{sparse_row.p90_ms:.3f}) "
            f"| {sparse_row.speedup:.2f}x | {1 / (1 - sparsity):.1f}x | {sparse_row.macs_ratio:.1f}x | {kernels} "
            f"| {difference:.1e} | {share} |"
        )
    print()
    for model_name, sparsity, batch, _, sparse_row, *_ in results:
        goal = GOALS.get(round(sparsity, 4))
        if goal is not None:
            verdict = "met" if sparse_row.speedup >= goal else f"not met (short by {goal - sparse_row.speedup:.2f}x)"
            print(f"goal >= {goal}x at {sparsity:.0%}, {model_name}, batch {batch}: {sparse_row.speedup:.2f}x, {verdict}")


if __name__ == "__main__":
    main()
