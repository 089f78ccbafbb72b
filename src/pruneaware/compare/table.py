"""Mean ± standard deviation over seeds of every (method, sparsity) cell, as numbers and as a markdown table."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from pruneaware.compare.records import RunRecord
from pruneaware.compare.spec import DENSE, ComparisonSpec

SPARSITY_NOTE_POINTS = 0.5
"""A cell shows its achieved sparsity when it is this many points away from the column's target."""


@dataclass(frozen=True)
class Cell:
    """One method at one target sparsity, over the seeds that finished."""

    accuracy_mean: float
    accuracy_std: float
    sparsity_mean: float
    seeds: int


def aggregate(records: list[RunRecord]) -> dict[tuple[str, float], Cell]:
    """Group runs by (method, target) and average over seeds (sample standard deviation; 0 for one seed)."""
    groups: dict[tuple[str, float], list[RunRecord]] = defaultdict(list)
    for record in records:
        groups[(record.method, round(record.target_sparsity, 6))].append(record)
    return {key: _cell(group) for key, group in groups.items()}


def _cell(group: list[RunRecord]) -> Cell:
    accuracies = [record.accuracy for record in group]
    return Cell(
        statistics.fmean(accuracies),
        statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        statistics.fmean(record.achieved_sparsity for record in group),
        len(group),
    )


def markdown_table(spec: ComparisonSpec, records: list[RunRecord]) -> str:
    """Test accuracy (%) per method (rows) and target sparsity (columns); dense repeated in every column."""
    cells = aggregate(records)
    header = "| method | " + " | ".join(f"{sparsity:.0%}" for sparsity in spec.sparsities) + " |"
    lines = [header, "|---|" + "---|" * len(spec.sparsities)]
    dense = next((cell for (method, _), cell in cells.items() if method == DENSE), None)
    lines.append(f"| {DENSE} | " + " | ".join(_format(dense, None) for _ in spec.sparsities) + " |")
    for method in spec.methods:
        runs = set(spec.method_sparsities(method))
        row = [_format(cells.get((method.label, round(s, 6))), s) if s in runs else "n/a" for s in spec.sparsities]
        lines.append(f"| {method.label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _format(cell: Cell | None, target: float | None) -> str:
    if cell is None:
        return "—"
    text = f"{100 * cell.accuracy_mean:.2f} ± {100 * cell.accuracy_std:.2f}"
    if target is not None and abs(cell.sparsity_mean - target) * 100 > SPARSITY_NOTE_POINTS:
        text += f" (at {cell.sparsity_mean:.1%})"
    return text
