"""The run report as markdown: headline comparison, per-layer sparsity, plots, how to reproduce."""

from __future__ import annotations

import platform

import torch

from pruneaware.job.results import JobResult, last_phase
from pruneaware.report.table import accuracy_change, comparison_rows, latency_target_rows, quantization_change


def render_markdown(result: JobResult) -> str:
    header, rows = comparison_rows(result)
    spec = result.spec
    lines = [
        f"# pruneaware run: {spec.recipe.name}",
        "",
        f"{spec.train.model} on {spec.train.dataset}, {spec.train.epochs} epochs, batch {spec.train.batch_size}, "
        f"{spec.train.optimizer} lr {spec.train.lr} ({spec.train.lr_schedule}), seed {spec.train.seed}, on {result.device}.",
        "",
        *(_interrupted(result) if not result.complete else []),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    change = accuracy_change(result)
    if change is not None:
        lines += [f"Accuracy change from pruning: {change:+.2f} points.", ""]
    change = quantization_change(result)
    if change is not None:
        lines += [
            f"Accuracy change from int8 conversion after quantization-aware training: {change:+.2f} points.",
            "",
            "The int8 column is the pruned model after QAT in its last epochs, converted by torchao's PT2E flow and run on "
            "oneDNN int8 kernels: its accuracy and latency are measured with those kernels, its sparsity and MACs are counted "
            "in the int8 weights, and its checkpoint size is the int8 state (int8 weights, per-channel scales and zero points, "
            "float biases). The pruned column holds the same weights in fp32.",
            "",
        ]
    lines += _latency_target(result)
    lines += [
        "Sparsity is counted from the weights. Unstructured zeros do not make dense kernels faster: ",
        "the effective MACs are what a sparse kernel would need, and the latency rows are measured with dense kernels.",
        "",
        "## Per-layer sparsity",
        "",
        "| layer | shape | nonzero | sparsity |",
        "|---|---|---|---|",
        *(
            f"| {layer.name} | {list(layer.shape)} | {layer.nonzero:,} / {layer.numel:,} | {layer.sparsity:.2%} |"
            for layer in last_phase(result).summary.layers
        ),
        "",
        "## Plots",
        "",
        "![schedule](plots/schedule.png)",
        "![curves](plots/curves.png)",
        "![layers](plots/layer_sparsity.png)",
        "",
        "## Environment",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}, "
        f"{platform.machine()} {platform.processor() or ''}".rstrip(),
        "",
        "The recipe and training settings of this run are in `spec.yaml`; "
        f"`pruneaware run {result.directory / 'spec.yaml'}` repeats it. Per-step logs: `<phase>/steps.csv` "
        "and, with the 'logs' extra, TensorBoard events in `tensorboard/`.",
        "",
    ]
    return "\n".join(lines)


def _latency_target(result: JobResult) -> list[str]:
    found = latency_target_rows(result)
    if found is None:
        return []
    caption, header, rows = found
    return [
        f"{caption}. Each model is measured on the target's backend and settings, the fastest of interleaved forwards "
        "(the latency table's estimator).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def _interrupted(result: JobResult) -> list[str]:
    done = ", ".join(f"{name} {phase.history[-1].epoch}" for name, phase in result.phases.items())
    return [
        f"**Interrupted run**: epochs done per phase: {done} of {result.spec.train.epochs}. These figures are from the last "
        f"checkpoints; `pruneaware run --resume {result.directory}` finishes it.",
        "",
    ]
