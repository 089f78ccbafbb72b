"""The main job: train a dense baseline and a pruned model the same way, measure both, write a report."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from pruneaware import measure
from pruneaware.data import DatasetSplits, load_dataset
from pruneaware.distributed.world import World
from pruneaware.errors import StateError
from pruneaware.job import checkpoint
from pruneaware.job.spec import RunSpec
from pruneaware.job.trainer import EpochRecord, PhaseTrainer, StepCallback, evaluate
from pruneaware.models import build_model
from pruneaware.quantization import Int8Model, int8_as_float
from pruneaware.schedules import Schedule
from pruneaware.summary import Summary, summarize

log = logging.getLogger(__name__)
SPEC_FILE = "spec.yaml"


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
    def accuracy(self) -> float:
        return self.history[-1].test_accuracy


@dataclass(frozen=True)
class JobResult:
    spec: RunSpec
    directory: Path
    phases: dict[str, PhaseResult]
    schedule: Schedule | None
    total_steps: int


def prepare_run_directory(spec: RunSpec, directory: Path) -> None:
    """Create the run folder and store the spec, so ``--resume`` needs nothing but the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(yaml.safe_dump(spec.to_mapping(), sort_keys=False))


def load_run_spec(directory: Path) -> RunSpec:
    """The spec a run folder was started with."""
    path = directory / SPEC_FILE
    if not path.is_file():
        raise StateError(f"{str(directory)!r} is not a run folder (no {SPEC_FILE}); pass the folder a previous 'pruneaware run' wrote")
    return RunSpec.from_yaml(path)


def check_run(spec: RunSpec) -> None:
    """Build the data, model and pruner of ``spec`` without training, so bad settings fail before any work."""
    data = load_dataset(spec.train.dataset, seed=spec.train.seed)
    _trainer("pruned", spec, data, Path("unused"), ())


def run_job(
    spec: RunSpec,
    directory: Path,
    *,
    console: Console | None = None,
    callbacks: Sequence[StepCallback] = (),
    latency_batches: Sequence[int] = (1, 64),
) -> JobResult | None:
    """Train each phase (continuing from checkpoints in ``directory``), measure, and return the results.

    In a distributed run every rank trains; rank 0 alone shows progress, saves, measures and returns
    the results, the other ranks return None.
    """
    console = console or Console(stderr=True)
    world = World.current()
    data = load_dataset(spec.train.dataset, seed=spec.train.seed)
    phases = ["dense", "pruned"] if spec.train.dense_baseline else ["pruned"]
    trained: dict[str, tuple[nn.Module, list[EpochRecord]]] = {}
    trainers = [_trainer(phase, spec, data, directory, callbacks) for phase in phases]  # validates before training
    for phase, trainer in zip(phases, trainers):
        with _progress(console, disable=not world.is_main) as progress:
            task = progress.add_task(f"{phase:>6}", total=trainer.total_steps, loss=float("nan"))
            progress.update(task, completed=trainer.epoch * trainer.steps_per_epoch)
            history = trainer.run(on_step=lambda step, loss: progress.update(task, completed=step, loss=loss))
        if world.is_main:
            checkpoint.atomic_save(trainer.model.state_dict(), directory / f"{phase}_model.pt")
        trained[phase] = (trainer.model, history)
    if not world.is_main:
        return None
    inputs = data.test.tensors[0]
    models = {phase: model for phase, (model, _) in trained.items()}
    int8 = trainers[-1].qat.convert() if trainers[-1].qat is not None else None  # checks that masked weights are 0 in int8
    if int8 is not None:
        models["int8"] = int8.module
    latency = {batch: measure.compare_latency(models, inputs[:batch]) for batch in latency_batches}
    results = {
        phase: PhaseResult(
            phase=phase,
            history=history,
            summary=summarize(model, spec.recipe.scope.build().select(model), target=history[-1].target_sparsity),
            macs=measure.count_macs(model, inputs[:1]),
            size=measure.state_dict_size_bytes(model),
            latency={batch: latency[batch][phase] for batch in latency_batches},
        )
        for phase, (model, history) in trained.items()
    }
    if int8 is not None:
        results["int8"] = _int8_result(int8, *trained["pruned"], spec, data, {batch: latency[batch]["int8"] for batch in latency_batches})
    pruned = trainers[-1]
    return JobResult(spec=spec, directory=directory, phases=results, schedule=pruned.pruner.schedule, total_steps=pruned.total_steps)


def write_metrics(result: JobResult) -> None:
    """Every epoch of every phase as CSV, and the headline numbers as JSON."""
    rows = [asdict(record) for phase in result.phases.values() for record in phase.history]
    with open(result.directory / "metrics.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    headline = {
        name: {
            "accuracy": phase.accuracy,
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
    (result.directory / "summary.json").write_text(json.dumps(headline, indent=2))


def _int8_result(
    int8: Int8Model, model: nn.Module, history: list[EpochRecord], spec: RunSpec, data: DatasetSplits, latency: dict[int, measure.LatencyReport]
) -> PhaseResult:
    """The int8 model after QAT: accuracy from its int8 kernels, zeros and MACs counted in its int8 weights, size of its int8 state."""
    counted = int8_as_float(model, int8)
    test_loss, accuracy = evaluate(int8.module, data.test)
    summary = summarize(counted, spec.recipe.scope.build().select(counted), target=history[-1].target_sparsity)
    record = replace(history[-1], phase="int8", test_loss=test_loss, test_accuracy=accuracy, sparsity=summary.sparsity, seconds=int8.seconds)
    return PhaseResult(
        phase="int8",
        history=[record],
        summary=summary,
        macs=measure.count_macs(counted, data.test.tensors[0][:1]),
        size=int8.size,
        latency=latency,
    )


def _trainer(phase: str, spec: RunSpec, data: DatasetSplits, directory: Path, callbacks: Sequence[StepCallback]) -> PhaseTrainer:
    torch.manual_seed(spec.train.seed)  # same initial weights for both phases
    model = build_model(spec.train.model, data.input_shape, data.num_classes)
    recipe = spec.recipe if phase == "pruned" else None
    qat = spec.quantization.qat if phase == "pruned" else None
    return PhaseTrainer(phase, model, data.train, data.test, spec.train, directory / phase, recipe=recipe, callbacks=callbacks, qat=qat)


def _progress(console: Console, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=disable,
    )
