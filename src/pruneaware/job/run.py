"""The main job: train a dense baseline and a pruned model the same way, measure both, write a report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pruneaware.data.batches import head
from pruneaware.distributed.world import World
from pruneaware.core.errors import ConfigError, StateError
from pruneaware.job import checkpoint
from pruneaware.job.device import compute_settings, select_device
from pruneaware.job.inputs import JobInputs, prepare_inputs
from pruneaware.job.results import JobResult, PhaseResult, measure_job, write_metrics
from pruneaware.job.spec import RunSpec
from pruneaware.job.steplog import StepLog
from pruneaware.job.trainer import PhaseTrainer, StepCallback

__all__ = ["JobResult", "PhaseResult", "build_trainer", "check_run", "load_run_spec", "prepare_run_directory", "run_job", "write_metrics"]

log = logging.getLogger(__name__)
SPEC_FILE = "spec.yaml"


def prepare_run_directory(spec: RunSpec, directory: Path) -> None:
    """Create the run folder and store the spec, so ``--resume`` needs nothing but the folder."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SPEC_FILE).write_text(yaml.safe_dump(spec.to_mapping(), sort_keys=False))


def load_run_spec(directory: Path) -> RunSpec:
    """The spec a run folder was started with."""
    path = directory / SPEC_FILE
    if not path.is_file():
        raise StateError(f"{str(directory)!r} is not a run folder (no {SPEC_FILE}); pass the folder a previous 'pruneaware run' wrote")
    damaged = f"{str(path)!r} is damaged or was edited by hand"
    fix = "put back the spec.yaml the run was started with, or start a new run"
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise StateError(f"{damaged} (binary data: {error.reason} at byte {error.start}); {fix}") from None
    try:
        return RunSpec.from_yaml(path)
    except ConfigError as error:
        raise StateError(f"{damaged} ({error}); {fix}") from None


def check_run(spec: RunSpec) -> None:
    """Build the data, model and pruner of ``spec`` without training, so bad settings fail before any work."""
    with compute_settings(spec.train.threads, spec.train.deterministic, select_device(spec.train.device)):
        build_trainer("pruned", spec, prepare_inputs(spec.train), Path("unused"))


def run_job(
    spec: RunSpec,
    directory: Path,
    *,
    console: Console | None = None,
    callbacks: Sequence[StepCallback] = (),
    latency_batches: Sequence[int] = (1, 64),
) -> JobResult | None:
    """Train each phase (continuing from checkpoints in ``directory``), measure, and return the results.

    In a distributed run every rank trains; rank 0 alone shows progress, saves, logs, measures and
    returns the results, the other ranks return None.
    """
    console = console or Console(stderr=True)
    world = World.current()
    with compute_settings(spec.train.threads, spec.train.deterministic, select_device(spec.train.device)):
        inputs = prepare_inputs(spec.train)
        if world.is_main:
            for path in checkpoint.remove_stale_temporaries(directory):
                log.info("removed %s, left by a writer that was killed", path)
        phases = ["dense", "pruned"] if spec.train.dense_baseline else ["pruned"]
        trainers = {phase: build_trainer(phase, spec, inputs, directory, callbacks, log_steps=world.is_main) for phase in phases}  # validates before training
        for phase, trainer in trainers.items():
            with _progress(console, disable=not world.is_main) as progress:
                task = progress.add_task(f"{phase:>6}", total=trainer.total_steps, loss=float("nan"))
                progress.update(task, completed=trainer.epoch * trainer.steps_per_epoch)
                trainer.run(on_step=lambda step, loss: progress.update(task, completed=step, loss=loss))
            if world.is_main:
                checkpoint.atomic_save(trainer.model.state_dict(), directory / f"{phase}_model.pt")
        if not world.is_main:
            return None
        return measure_job(spec, directory, inputs, trainers, latency_batches)


def build_trainer(
    phase: str, spec: RunSpec, inputs: JobInputs, directory: Path, callbacks: Sequence[StepCallback] = (), log_steps: bool = False
) -> PhaseTrainer:
    """The trainer of one phase; both phases start from the same initial (or pretrained) weights."""
    model = inputs.build_model()
    recipe = spec.recipe if phase == "pruned" else None
    step_log = None
    if log_steps:
        example = head(inputs.data.test, 1)[0].to(inputs.device)
        step_log = StepLog(directory / phase / "steps.csv", directory / "tensorboard" / phase, spec.train.log_every, example)
    return PhaseTrainer(
        phase, model, inputs.data.train, inputs.data.test, spec.train, directory / phase,
        recipe=recipe, callbacks=callbacks, task=inputs.task, device=inputs.device, step_log=step_log,
    )


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
