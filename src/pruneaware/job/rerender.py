"""A run folder's results rebuilt from its spec and checkpoints, for ``pruneaware report`` on finished or interrupted runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pruneaware.core.errors import StateError
from pruneaware.job.device import compute_settings, select_device
from pruneaware.job.inputs import prepare_inputs
from pruneaware.job.results import JobResult, measure_job
from pruneaware.job.run import build_trainer, load_run_spec
from pruneaware.job.trainer import PhaseTrainer


def load_result(directory: Path, latency_batches: Sequence[int] = (1, 64)) -> JobResult:
    """Restore every phase that finished at least one epoch and measure it again (latency is timed anew on this machine)."""
    spec = load_run_spec(directory)
    with compute_settings(spec.train.threads, spec.train.deterministic, select_device(spec.train.device)):
        inputs = prepare_inputs(spec.train)
        phases = ["dense", "pruned"] if spec.train.dense_baseline else ["pruned"]
        trainers: dict[str, PhaseTrainer] = {}
        for phase in phases:
            trainer = build_trainer(phase, spec, inputs, directory)
            if not trainer.restore() or not trainer.history:
                continue
            if trainer.epoch >= spec.train.epochs and trainer.pruner is not None:
                trainer.pruner.finalize()  # as at the end of training
            trainers[phase] = trainer
        if not trainers:
            raise StateError(f"{str(directory)!r} holds no finished epoch yet; resume it with 'pruneaware run --resume {directory}'")
        return measure_job(spec, directory, inputs, trainers, latency_batches)
