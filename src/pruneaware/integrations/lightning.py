"""PyTorch Lightning: a recipe runs inside ``Trainer.fit``; the pruner's state travels in Lightning's checkpoints.

``Trainer(callbacks=[PruningCallback("default")])`` is all it takes. Works with ``lightning``
(``lightning.pytorch``) or ``pytorch_lightning``, whichever is installed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pruneaware.core.errors import StateError, UsageError
from pruneaware.integrations.deferred import DeferredWeights
from pruneaware.recipe.shipped import resolve_recipe
from pruneaware.integrations.sharded_state import gather, has_shards, reshard
from pruneaware.integrations.training import backward_penalty, sample_batch
from pruneaware.core.calibration import LossFn
from pruneaware.core.driver import Pruner
from pruneaware.recipe import Recipe

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:
    try:
        from pytorch_lightning import Callback, LightningModule, Trainer
    except ImportError:
        raise UsageError("the Lightning callback needs PyTorch Lightning: pip install pytorch-lightning (or lightning)") from None


class PruningCallback(Callback):
    """Prunes the LightningModule while ``Trainer.fit`` trains it, as ``recipe`` says.

    The pruner is built when fitting starts, over the module and its optimizer, with the schedule
    spanning ``trainer.estimated_stepping_batches`` optimizer steps (gradient accumulation and
    ``max_steps`` included). It advances through the optimizer's step hooks, adds the gradient of
    the recipe's regularizer term before every step (``loss + pruner.penalty()`` without touching
    ``training_step``), saves its state with every Lightning checkpoint, and resumes from one
    (``fit(ckpt_path=...)``), replaying channel removals before the weights are loaded. When fitting
    ends the sparsity is made permanent (``Pruner.finalize``).

    ``example_inputs`` (structured recipes trace the model) defaults to the first inputs of the
    training data; criteria that score on data (``snip``, ``grasp``, ``obd``) also need ``loss_fn``
    (``loss_fn(module(inputs), targets)`` on ``(inputs, targets)`` batches).
    """

    def __init__(self, recipe: Recipe | Mapping[str, Any] | str | Path, *, example_inputs: Any = None, loss_fn: LossFn | None = None):
        self.recipe = resolve_recipe(recipe)
        self.example_inputs = example_inputs
        self.loss_fn = loss_fn
        self._pruner: Pruner | None = None
        self._saved_state: dict[str, Any] | None = None
        self._restored = False
        self._deferred: DeferredWeights | None = None

    @property
    def pruner(self) -> Pruner:
        """The running pruner (built when ``Trainer.fit`` starts)."""
        if self._pruner is None:
            raise UsageError("the pruner is built when Trainer.fit starts; read callback.pruner during or after fit")
        return self._pruner

    # -- building and restoring ------------------------------------------------------------------

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self.recipe.structured is not None:
            self._deferred = DeferredWeights(pl_module)  # a resumed checkpoint is slimmer than the fresh module

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        total = trainer.estimated_stepping_batches  # also sets up the training data
        batches = trainer.num_training_batches
        inputs, calibration = _inputs_and_calibration(sample_batch(trainer.train_dataloader, pl_module.device))
        self._pruner = Pruner(
            pl_module,
            _single_optimizer(trainer),
            self.recipe,
            steps_per_epoch=math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else None,
            total_steps=int(total) if math.isfinite(total) else None,
            example_inputs=self.example_inputs if self.example_inputs is not None else inputs,
            calibration_data=calibration,
            loss_fn=self.loss_fn,
        )
        self._restored = False
        if self._saved_state is not None:
            self._restore(self._saved_state)
            self._saved_state = None
        if self._deferred is not None:
            self._deferred.load_into(pl_module)
            self._deferred = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path is not None and not self._restored:  # checked here: some strategies restore after on_fit_start
            raise StateError(
                f"checkpoint {str(trainer.ckpt_path)!r} holds no pruner state; resume from a checkpoint written with "
                "this callback, or load its weights into the module and fit without ckpt_path to prune from there"
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._deferred is not None:  # fit failed before it started
            self._deferred.detach()
            self._deferred = None

    # -- training ------------------------------------------------------------------------------------

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if self._pruner is not None:
            backward_penalty(self._pruner)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pruner is not None:
            self._pruner.finalize()

    # -- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self._pruner is not None:  # every rank builds the checkpoint; FSDP2 shards are gathered into whole tensors
            state = self._pruner.state_dict()
            return gather(state) if has_shards(state) else state
        return self._saved_state or {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._pruner is None:
            self._saved_state = state_dict  # applied when fitting starts, once the optimizer exists
        else:  # strategies that restore after setup (ModelParallelStrategy, FSDP, DeepSpeed) call this after on_fit_start
            self._restore(state_dict)

    def _restore(self, state: dict[str, Any]) -> None:
        """Load a saved pruner state; FSDP2 runs cut their shards out of the whole tensors it was saved with."""
        assert self._pruner is not None
        template = self._pruner.state_dict()
        self._pruner.load_state_dict(reshard(state, template) if has_shards(template) else state)  # replays channel removals first
        self._restored = True


def _single_optimizer(trainer: Trainer) -> torch.optim.Optimizer:
    optimizers = trainer.optimizers
    if len(optimizers) != 1:
        raise UsageError(
            f"PruningCallback drives one optimizer, the module's configure_optimizers returned {len(optimizers)}; "
            "prune with pa.Pruner in the module itself for several"
        )
    return optimizers[0]


def _inputs_and_calibration(batch: Any) -> tuple[Any, list[tuple[Any, Any]] | None]:
    """Example inputs and calibration data from one training batch: ``(inputs, targets)`` pairs split, anything else as is."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], [(batch[0], batch[1])]
    return batch, None


__all__ = ["PruningCallback"]
