"""What a run measured on each phase's model, and the files that record it (metrics.csv, summary.json)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from torch import nn

from pruneaware import measure
from pruneaware.data.batches import head
from pruneaware.job.inputs import JobInputs
from pruneaware.job.latency import LatencyCheck, check_latency_target, latency_target_of
from pruneaware.job.spec import RunSpec
from pruneaware.job.trainer import EpochRecord, PhaseTrainer, evaluate
from pruneaware.quantization import Int8Model, int8_as_float
from pruneaware.schedules import Schedule
from pruneaware.measure.sparsity import Summary, summarize


@dataclass(frozen=True)
class PhaseResult:
    """A trained model of one phase and what was measured on it."""

    phase: str
    history: list[EpochRecord]
    summary: Summary
    macs: measure.MacCount
    size: measure.SizeReport
    latency: dict[int, measure.LatencyReport]

    @property
    def metric(self) -> float:
        """The task's validation metric after the last epoch (accuracy, perplexity or cosine)."""
        return self.history[-1].test_metric

    @property
    def accuracy(self) -> float:
        return self.metric


@dataclass(frozen=True)
class JobResult:
    spec: RunSpec
    directory: Path
    phases: dict[str, PhaseResult]
    schedule: Schedule | None
    total_steps: int
    device: str = "cpu"
    metric: str = "accuracy"
    latency_target: LatencyCheck | None = None
    """With a latency target: its budget, and predicted next to measured latency on its backend."""

    @property
    def complete(self) -> bool:
        """False for a report re-rendered from an interrupted run."""
        return all(phase.history[-1].epoch >= self.spec.train.epochs for name, phase in self.phases.items() if name != "int8") and "pruned" in self.phases


def last_phase(result: JobResult) -> PhaseResult:
    """The pruned phase, or the dense one of a run interrupted before pruning began."""
    return result.phases.get("pruned") or result.phases["dense"]


def measure_job(spec: RunSpec, directory: Path, inputs: JobInputs, trainers: dict[str, PhaseTrainer], latency_batches: Sequence[int]) -> JobResult:
    """Count, size and time every trained phase side by side on the device it trained on (and the int8 model after QAT)."""
    example = head(inputs.data.test, max(latency_batches, default=1))[0].to(inputs.device)
    models = {phase: trainer.model for phase, trainer in trainers.items()}
    last = list(trainers.values())[-1]
    int8 = last.qat.convert() if last.qat is not None and "pruned" in trainers else None  # checks that masked weights are 0 in int8
    if int8 is not None:
        models["int8"] = int8.module
    latency = {batch: measure.compare_latency(models, example[:batch]) for batch in latency_batches}
    results = {
        phase: PhaseResult(
            phase=phase,
            history=trainer.history,
            summary=summarize(trainer.model, spec.recipe.scope.build().select(trainer.model), target=trainer.history[-1].target_sparsity),
            macs=measure.count_macs(trainer.model, example[:1]),
            size=measure.state_dict_size_bytes(trainer.model),
            latency={batch: latency[batch][phase] for batch in latency_batches},
        )
        for phase, trainer in trainers.items()
    }
    if int8 is not None:
        results["int8"] = _int8_result(int8, last, spec, inputs, {batch: latency[batch]["int8"] for batch in latency_batches})
    target = latency_target_of(last.pruner) if "pruned" in trainers else None
    checked = check_latency_target(target, {p: models[p] for p in ("dense", "pruned") if p in models}, example) if target else None
    return JobResult(
        spec=spec, directory=directory, phases=results, schedule=last.pruner.target_schedule() if last.pruner else None,
        total_steps=last.total_steps, device=inputs.device.type, metric=inputs.task.metric, latency_target=checked,
    )


def write_metrics(result: JobResult) -> None:
    """Every epoch of every phase as CSV, and the headline numbers as JSON."""
    rows = [asdict(record) for phase in result.phases.values() for record in phase.history]
    with open(result.directory / "metrics.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    headline = {
        name: {
            result.metric: phase.metric,
            "sparsity": phase.summary.sparsity,
            "model_sparsity": phase.summary.model_sparsity,
            "parameters": phase.summary.model_parameters,
            "nonzero_parameters": phase.summary.model_nonzero,
            "macs": phase.macs.dense,
            "effective_macs": phase.macs.effective,
            "checkpoint_bytes": phase.size.raw,
            "checkpoint_gzip_bytes": phase.size.compressed,
            "latency_ms": {str(batch): report.median_ms for batch, report in phase.latency.items()},
            "layers": phase.summary.to_dict()["layers"],
        }
        for name, phase in result.phases.items()
    }
    if result.latency_target is not None:
        headline["latency_target"] = result.latency_target.to_dict()
    (result.directory / "summary.json").write_text(json.dumps(headline, indent=2))


def _int8_result(int8: Int8Model, trainer: PhaseTrainer, spec: RunSpec, inputs: JobInputs, latency: dict[int, measure.LatencyReport]) -> PhaseResult:
    """The int8 model after QAT: accuracy from its int8 kernels, zeros and MACs counted in its int8 weights, size of its int8 state."""
    model: nn.Module = trainer.model
    history = trainer.history
    counted = int8_as_float(model, int8)
    test_loss, accuracy = evaluate(int8.module, inputs.data.test, spec.train.eval_batch_size, inputs.task)
    summary = summarize(counted, spec.recipe.scope.build().select(counted), target=history[-1].target_sparsity)
    record = replace(history[-1], phase="int8", test_loss=test_loss, test_metric=accuracy, sparsity=summary.sparsity, seconds=int8.seconds)
    return PhaseResult(
        phase="int8",
        history=[record],
        summary=summary,
        macs=measure.count_macs(counted, head(inputs.data.test, 1)[0]),
        size=int8.size,
        latency=latency,
    )
