"""The dense-vs-pruned comparison as rows, shared by the markdown report and the terminal table."""

from __future__ import annotations

from collections.abc import Callable

from pruneaware.job.results import JobResult, PhaseResult


def _bytes(count: int) -> str:
    return f"{count / 1024:,.1f} KiB" if count < 1024**2 else f"{count / 1024**2:,.2f} MiB"


def _ratio(pruned: float, dense: float) -> str:
    return f"{pruned / dense:.3f}x" if dense else "n/a"


def comparison_rows(result: JobResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one metric per row, one column per phase, plus each phase's ratio to dense."""
    phases = list(result.phases.values())
    header = ["metric", *(phase.phase for phase in phases)]
    metrics: list[tuple[str, Callable[[PhaseResult], str], Callable[[PhaseResult], float] | None]] = [
        (f"test {result.metric}", lambda p: format_metric(result.metric, p.metric), None),
        ("sparsity (pruned scope, counted)", lambda p: f"{p.summary.sparsity:.2%}", None),
        ("sparsity (whole model, counted)", lambda p: f"{p.summary.model_sparsity:.2%}", None),
        ("parameters", lambda p: f"{p.summary.model_parameters:,}", None),
        ("nonzero parameters", lambda p: f"{p.summary.model_nonzero:,}", lambda p: p.summary.model_nonzero),
        ("MACs per sample (dense kernels)", lambda p: f"{p.macs.dense:,}", lambda p: p.macs.dense),
        ("MACs per sample (nonzero weights only)", lambda p: f"{p.macs.effective:,}", lambda p: p.macs.effective),
        ("checkpoint size", lambda p: _bytes(p.size.raw), lambda p: p.size.raw),
        ("checkpoint size, gzip", lambda p: _bytes(p.size.compressed), lambda p: p.size.compressed),
    ]
    for batch in phases[0].latency:
        metrics.append(
            (f"{result.device.upper()} latency, batch {batch} (median)", lambda p, b=batch: f"{p.latency[b].median_ms:.3f} ms", lambda p, b=batch: p.latency[b].median_ms)
        )
    dense = result.phases.get("dense")
    compared = [phase for phase in phases if phase is not dense] if dense else []
    header += [f"{phase.phase} / dense" for phase in compared]
    rows = []
    for label, show, value in metrics:
        row = [label, *(show(phase) for phase in phases)]
        row += [_ratio(value(phase), value(dense)) if value else "" for phase in compared]
        rows.append(row)
    return header, rows


def format_metric(metric: str, value: float) -> str:
    """Accuracy as a percentage, perplexity with two decimals, cosine similarity with four."""
    return f"{value:.2%}" if metric == "accuracy" else f"{value:.2f}" if metric == "perplexity" else f"{value:.4f}"


def accuracy_change(result: JobResult) -> float | None:
    """Pruned minus dense test accuracy, in percentage points (None without a dense baseline or for other metrics)."""
    phases: dict[str, PhaseResult] = result.phases
    if "dense" not in phases or "pruned" not in phases or result.metric != "accuracy":
        return None
    return 100 * (phases["pruned"].accuracy - phases["dense"].accuracy)


def quantization_change(result: JobResult) -> float | None:
    """int8 (after QAT) minus pruned fp32 test accuracy, in percentage points (None without QAT)."""
    phases: dict[str, PhaseResult] = result.phases
    if "int8" not in phases or result.metric != "accuracy":
        return None
    return 100 * (phases["int8"].accuracy - phases["pruned"].accuracy)


def latency_target_rows(result: JobResult) -> tuple[str, list[str], list[list[str]]] | None:
    """With a latency target: a caption, header and one row per phase with predicted and measured latency (None without)."""
    check = result.latency_target
    if check is None:
        return None
    caption = (
        f"Latency target: {check.budget_ms:.3f} ms ({check.budget_ms / check.dense_predicted_ms:.2f} of the dense model's predicted "
        f"{check.dense_predicted_ms:.3f} ms) on {check.backend}, batch {check.batch}, {check.threads} thread(s): "
        + ("met, channel removal stopped once the predicted latency reached it" if check.met else
           "not met: the schedule ended first (raise structured.schedule.final, at most max_layer_ratio)")
    )
    header = ["phase", "predicted", "measured (fastest)", "prediction error", "measured / budget"]
    rows = [
        [phase, f"{predicted:.3f} ms", f"{check.measured_ms[phase]:.3f} ms", f"{100 * (predicted / check.measured_ms[phase] - 1):+.1f}%",
         f"{check.measured_ms[phase] / check.budget_ms:.2f}"]
        for phase, predicted in check.predicted_ms.items()
    ]
    return caption, header, rows
