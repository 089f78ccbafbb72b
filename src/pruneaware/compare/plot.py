"""The comparison's plot: test accuracy against achieved sparsity, one line per method, dense as a band."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pruneaware.compare.records import RunRecord  # noqa: E402
from pruneaware.compare.spec import DENSE, ComparisonSpec  # noqa: E402
from pruneaware.compare.table import aggregate  # noqa: E402

MARKERS = "osD^v<>pP*Xh"


def plot_comparison(spec: ComparisonSpec, records: list[RunRecord], path: Path) -> Path:
    """Each point sits at the sparsity counted from the weights (mean over seeds), error bars one std of accuracy."""
    cells = aggregate(records)
    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    dense = next((cell for (method, _), cell in cells.items() if method == DENSE), None)
    if dense is not None:
        low, high = 100 * (dense.accuracy_mean - dense.accuracy_std), 100 * (dense.accuracy_mean + dense.accuracy_std)
        axis.axhspan(low, high, color="grey", alpha=0.25, label="dense (mean ± std)")
        axis.axhline(100 * dense.accuracy_mean, color="grey", linewidth=1)
    colors = plt.get_cmap("tab20").colors
    for index, method in enumerate(spec.methods):
        points = sorted(((cell.sparsity_mean, cell) for (label, _), cell in cells.items() if label == method.label), key=lambda point: point[0])
        if not points:
            continue
        axis.errorbar(
            [100 * sparsity for sparsity, _ in points],
            [100 * cell.accuracy_mean for _, cell in points],
            yerr=[100 * cell.accuracy_std for _, cell in points],
            marker=MARKERS[index % len(MARKERS)], color=colors[(2 * index) % 20 + (index >= 10)], markersize=4, capsize=2, linewidth=1.2, label=method.label,
        )
    axis.set(xlabel="sparsity of prunable weights, counted (%)", ylabel="test accuracy (%)", title=f"{spec.name}: {spec.model} on {spec.dataset}, {spec.epochs} epochs per run")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path
