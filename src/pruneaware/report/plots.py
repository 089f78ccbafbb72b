"""Plots of a run: schedule vs measured sparsity, learning curves, per-layer sparsity."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pruneaware.job.results import JobResult, last_phase  # noqa: E402
from pruneaware.schedules import Schedule  # noqa: E402


def write_plots(result: JobResult) -> list[Path]:
    """Write every plot into ``<run>/plots`` and return their paths."""
    folder = result.directory / "plots"
    folder.mkdir(exist_ok=True)
    paths = [_schedule(result, folder / "schedule.png"), _curves(result, folder / "curves.png")]
    paths.append(_layers(result, folder / "layer_sparsity.png"))
    return paths


def plot_schedule(schedule: Schedule, total_steps: int, axis: plt.Axes | None = None, label: str = "scheduled target") -> plt.Axes:
    """Draw a schedule's target sparsity over ``total_steps`` optimizer steps as the staircase it is."""
    axis = axis or plt.subplots(figsize=(6, 3.5))[1]
    steps = range(total_steps + 1)
    axis.step(steps, [schedule.target(step) for step in steps], where="post", label=label)
    axis.set(xlabel="optimizer step", ylabel="target sparsity", ylim=(0, 1))
    return axis


def _schedule(result: JobResult, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if result.schedule is not None:
        plot_schedule(result.schedule, result.total_steps, axis)
    pruned = result.phases["pruned"].history if "pruned" in result.phases else []
    axis.plot([r.step for r in pruned], [r.sparsity for r in pruned], "o", markersize=3, label="counted in weights (per epoch)")
    axis.set(xlabel="optimizer step", ylabel="sparsity of pruned scope", ylim=(0, 1), title="Sparsity schedule")
    axis.legend(loc="lower right")
    return _save(figure, path)


def _curves(result: JobResult, path: Path) -> Path:
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.5))
    for phase in result.phases.values():
        epochs = [r.epoch for r in phase.history]
        loss_axis.plot(epochs, [r.train_loss for r in phase.history], label=f"{phase.phase} train")
        loss_axis.plot(epochs, [r.test_loss for r in phase.history], "--", label=f"{phase.phase} test")
        scale = 100 if result.metric == "accuracy" else 1
        accuracy_axis.plot(epochs, [scale * r.test_metric for r in phase.history], label=phase.phase)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Loss", yscale="log")
    unit = " (%)" if result.metric == "accuracy" else ""
    accuracy_axis.set(xlabel="epoch", ylabel=f"test {result.metric}{unit}", title=result.metric.capitalize())
    loss_axis.legend()
    accuracy_axis.legend()
    return _save(figure, path)


def _layers(result: JobResult, path: Path) -> Path:
    layers = last_phase(result).summary.layers
    figure, axis = plt.subplots(figsize=(max(5, 0.5 * len(layers) + 2), 3.5))
    axis.bar(range(len(layers)), [100 * layer.sparsity for layer in layers])
    axis.set_xticks(range(len(layers)), [layer.name for layer in layers], rotation=45, ha="right", fontsize=8)
    axis.set(ylabel="sparsity (%)", ylim=(0, 100), title="Per-layer sparsity (counted)")
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
