"""One training phase (dense baseline or pruned run), deterministic and resumable from its checkpoint."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from pruneaware.data.batches import head, take, to_device
from pruneaware.distributed.world import World
from pruneaware.core.errors import ConfigError, StateError
from pruneaware.job import checkpoint
from pruneaware.job.device import autocast
from pruneaware.job.spec import TrainSpec
from pruneaware.job.steplog import StepLog
from pruneaware.job.task import CLASSIFICATION, Task
from pruneaware.core.driver import Pruner
from pruneaware.core.legacy import with_stage_state
from pruneaware.quantization.stage import QuantizationAwareTraining
from pruneaware.recipe import Recipe

log = logging.getLogger(__name__)
StepCallback = Callable[[int], None]


@dataclass(frozen=True)
class EpochRecord:
    """Metrics after one epoch; sparsity is counted from the weights, ``test_metric`` is the task's ``metric``."""

    phase: str
    epoch: int
    step: int
    train_loss: float
    test_loss: float
    test_metric: float
    sparsity: float
    target_sparsity: float
    lr: float
    seconds: float
    metric: str = "accuracy"

    @property
    def test_accuracy(self) -> float:
        return self.test_metric


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, batch_size: int = 1000, task: Task = CLASSIFICATION, device: torch.device | None = None, amp: bool = False
) -> tuple[float, float]:
    """Mean loss and the task's metric (accuracy by default) on ``data``; restores the model's training mode."""
    was_training = model.training
    model.eval()
    device = device or torch.device("cpu")
    loss_sum, metric_sum, count = 0.0, 0.0, 0
    for indices in torch.arange(len(data)).split(batch_size):  # type: ignore[arg-type]
        inputs, targets = to_device(take(data, indices), device)
        with autocast(device, amp):
            outputs = model(inputs)
        loss, metric, counted = task.totals(outputs, targets)
        loss_sum, metric_sum, count = loss_sum + float(loss), metric_sum + metric, count + counted
    model.train(was_training)
    return task.finish(loss_sum, metric_sum, count)


def build_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    optimizer_class = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


def build_lr_schedule(optimizer: torch.optim.Optimizer, spec: TrainSpec, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if spec.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0))))


def epoch_order(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The shuffling of one epoch, a function of (seed, epoch) only, so a resumed run sees the same batches."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class PhaseTrainer:
    """Trains ``model`` for ``spec.epochs`` epochs, with a pruner when ``recipe`` is given.

    A checkpoint is written atomically after every epoch in ``directory``; constructing a
    trainer over a directory that holds one continues from it, bit-for-bit.

    In a process group of more than one rank the model trains under DistributedDataParallel, each
    rank on its share of every global batch (so the step count and schedules do not depend on the
    number of ranks, and a checkpoint resumes at any number); rank 0 alone evaluates and writes.
    """

    def __init__(
        self,
        phase: str,
        model: nn.Module,
        train_data: Dataset,
        test_data: Dataset,
        spec: TrainSpec,
        directory: Path,
        recipe: Recipe | None = None,
        callbacks: Sequence[StepCallback] = (),
        task: Task = CLASSIFICATION,
        device: torch.device | None = None,
        step_log: StepLog | None = None,
    ):
        self.phase = phase
        self.model = model
        self.train_data, self.test_data = train_data, test_data
        self.spec = spec
        self.directory = Path(directory)
        self.callbacks = list(callbacks)
        self.task, self.device, self.step_log = task, device or torch.device("cpu"), step_log
        self.world = World.current()
        if self.world.size > spec.batch_size:
            raise ConfigError("train.batch_size", spec.batch_size, f"at least the number of processes ({self.world.size}): each takes a share of every batch")
        self.steps_per_epoch = math.ceil(len(train_data) / spec.batch_size)  # type: ignore[arg-type]
        self.total_steps = self.steps_per_epoch * spec.epochs
        self.optimizer = build_optimizer(model, spec)
        self.lr_schedule = build_lr_schedule(self.optimizer, spec, self.total_steps)
        self._wrapped = DistributedDataParallel(model) if self.world.distributed else model
        example = to_device(head(train_data, spec.batch_size), self.device)
        self.pruner = (
            Pruner(
                self._wrapped,
                self.optimizer,
                recipe,
                steps_per_epoch=self.steps_per_epoch,
                epochs=spec.epochs,
                example_inputs=example[0],
                calibration_data=[example],  # SNIP, GraSP, OBD
                loss_fn=task.loss,
            )
            if recipe
            else None
        )
        self.history: list[EpochRecord] = []
        self.epoch = 0

    @property
    def network(self) -> nn.Module:
        """What batches go through: the model, or its DDP wrapper (the pruner's, rebuilt after channel removal), or its fake-quantized capture during QAT."""
        return self.pruner.training_module if self.pruner is not None else self._wrapped

    @property
    def qat(self) -> QuantizationAwareTraining | None:
        """The pruner's ``qat`` stage (the recipe's ``quantization:`` section), if it has one."""
        return next((stage for stage in self.pruner.stages if isinstance(stage, QuantizationAwareTraining)), None) if self.pruner else None

    @property
    def checkpoint_path(self) -> Path:
        return self.directory / "checkpoint.pt"

    def run(self, on_step: Callable[[int, float], None] | None = None) -> list[EpochRecord]:
        """Train to the end (resuming if a checkpoint exists); returns one record per epoch."""
        if self.restore():
            log.info("%s: resumed at epoch %d", self.phase, self.epoch)
        if self.step_log is not None and self.world.is_main:
            self.step_log.start(self.lr_schedule.last_epoch)
        self.model.train()
        while self.epoch < self.spec.epochs:
            started, loss_sum = time.perf_counter(), 0.0
            order = epoch_order(self.spec.seed, self.epoch, len(self.train_data))  # type: ignore[arg-type]
            for batch in order.split(self.spec.batch_size):
                loss = self._batch_loss(batch)
                if self.pruner is not None:
                    loss = loss + self.pruner.penalty()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
                self.optimizer.step()
                self.lr_schedule.step()
                loss_value = loss.item()
                loss_sum += loss_value
                step = self.lr_schedule.last_epoch
                for callback in self.callbacks:
                    callback(step)
                if on_step is not None:
                    on_step(step, loss_value)
                if self.step_log is not None and self.world.is_main:
                    self.step_log.record(step, loss_value, lr, self.model, self.pruner)
            self.epoch += 1
            train_loss = self.world.sum(loss_sum) / self.world.size / self.steps_per_epoch  # each rank's loss is its share of the mean
            if self.world.is_main:
                self.history.append(self._record(train_loss, time.perf_counter() - started))
                checkpoint.atomic_save(self._state(), self.checkpoint_path)
            self.world.barrier()  # no rank reads the checkpoint, or runs ahead, before it is complete
        if self.step_log is not None:
            self.step_log.close()
        if self.pruner is not None:
            self.pruner.finalize()
        return self.history

    def restore(self) -> bool:
        """Continue from this phase's checkpoint, if there is one (True when there was)."""
        if not self.checkpoint_path.exists():
            return False
        self._restore(checkpoint.load(self.checkpoint_path))
        return True

    def _batch_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean loss of the global ``batch``; in a distributed run, this rank's share of it (DDP averages the gradients)."""
        shard = self.world.shard(batch) if self.world.distributed else batch
        inputs, targets = to_device(take(self.train_data, shard), self.device)
        with autocast(self.device, self.spec.amp):
            outputs = self.network(inputs)
        if not self.world.distributed:
            return self.task.loss(outputs, targets)
        summed, _, count = self.task.totals(outputs, targets)
        return self.world.mean_loss_share(summed, len(batch) * count // len(shard))

    def _record(self, train_loss: float, seconds: float) -> EpochRecord:
        test_loss, metric = evaluate(self.model, self.test_data, self.spec.eval_batch_size, self.task, self.device, self.spec.amp)
        summary = self.pruner.summary() if self.pruner else None
        return EpochRecord(
            phase=self.phase,
            epoch=self.epoch,
            step=self.lr_schedule.last_epoch,
            train_loss=train_loss,
            test_loss=test_loss,
            test_metric=metric,
            metric=self.task.metric,
            sparsity=summary.sparsity if summary else 0.0,
            target_sparsity=summary.target if summary else 0.0,
            lr=self.optimizer.param_groups[0]["lr"],
            seconds=seconds,
        )

    def _state(self) -> dict[str, object]:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "pruner": self.pruner.state_dict() if self.pruner else None,
            "rng": checkpoint.rng_state(),
            "history": [asdict(record) for record in self.history],
        }

    def _restore(self, state: dict[str, object]) -> None:
        missing = [key for key in ("epoch", "model", "optimizer", "lr_schedule", "rng", "history") if key not in state]
        if missing:
            raise StateError(
                f"checkpoint {str(self.checkpoint_path)!r} lacks {missing}: it is damaged or was not written by 'pruneaware run'; "
                "delete it to train this phase again from its start"
            )
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            if isinstance(error, StateError):
                raise
            raise StateError(
                f"checkpoint {str(self.checkpoint_path)!r} does not fit this run ({type(error).__name__}: {str(error).splitlines()[0]}); "
                "resume it with the recipe it was started with, or delete it to train this phase again"
            ) from None

    def _load_state(self, state: dict[str, object]) -> None:
        if self.pruner is not None:  # first: it replays channel removals (and captures QAT's module again), so the shapes below match
            self.pruner.load_state_dict(with_stage_state(state["pruner"], "qat", state.get("qat")))  # earlier releases kept QAT's beside it
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        checkpoint.restore_rng_state(state["rng"])
        self.history = [EpochRecord(**_current_names(record)) for record in state["history"]]
        self.epoch = int(state["epoch"])


def _current_names(record: dict[str, object]) -> dict[str, object]:
    """Records of runs started before the metric was named by the task held ``test_accuracy``."""
    record = dict(record)
    if "test_accuracy" in record:
        record["test_metric"] = record.pop("test_accuracy")
    return record
