"""The Pruner: a thin driver that runs a recipe's stages inside any training loop, through the optimizer's step hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.compose import as_recipe, assemble
from pruneaware.core.context import Context
from pruneaware.core.errors import UsageError
from pruneaware.core.legacy import LegacyAttributes
from pruneaware.core.materialized import require_materialized
from pruneaware.core.optimizer_hooks import LearningRates, StepHooks, is_elementwise
from pruneaware.core.progress import Progress
from pruneaware.core.state import STATE_FORMAT, load_state, save_state
from pruneaware.distributed.sync import RankZeroSync, resolve_sync
from pruneaware.core.calibration import Calibration, LossFn
from pruneaware.recipe import Recipe, TrainingLength
from pruneaware.structured.surgery import ParameterRemap

__all__ = ["STATE_FORMAT", "Pruner"]


class Pruner(Progress, LegacyAttributes):
    """Runs a recipe inside training: its stages (mask updates, regularizers, channel removal, QAT, ...) advanced every step.

    With an optimizer, its pre- and post-step hooks run the stages, so ``optimizer.step()`` is all a
    loop calls; without one, call ``pruner.before_step()`` and ``pruner.step()`` around each step.
    ``calibration_data`` scored by ``loss_fn`` feeds criteria that probe the model; structured
    pruning, ``synflow`` and QAT need ``example_inputs``. In a process group (``sync='auto'``) every
    rank adopts rank 0's decisions. Forward through ``pruner.training_module`` (a DistributedDataParallel
    wrapper rebuilt after channel removal, QAT's fake-quantized capture). Reports (``summary``,
    ``target_sparsity``, ``stage(name)``, ...) come from ``Progress``. See docs/architecture.md.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        recipe: Recipe | Mapping[str, Any] | str | Path,
        *,
        steps_per_epoch: int | None = None,
        epochs: int | None = None,
        total_steps: int | None = None,
        example_inputs: Any = None,
        calibration_data: Iterable[tuple[Any, Any]] | None = None,
        loss_fn: LossFn | None = None,
        sync: RankZeroSync | str | None = "auto",
    ):
        require_materialized(model)
        self.recipe, self.optimizer = as_recipe(recipe), optimizer
        if total_steps is None and steps_per_epoch and epochs:
            total_steps = steps_per_epoch * epochs
        length = TrainingLength(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        calibration = Calibration(calibration_data, loss_fn, example_inputs)
        ctx = self.ctx = Context(model, optimizer, None, length, calibration, resolve_sync(sync), example_inputs)  # type: ignore[arg-type]
        self.stages = assemble(self.recipe, ctx)
        ctx._learning_rates = LearningRates(optimizer, ctx.params) if optimizer is not None else None
        for stage in self.stages:
            stage.setup(ctx)
        self._hooks = StepHooks(optimizer, self, self._before_step, self._after_step)
        self._elementwise = is_elementwise(optimizer)
        self.finalized = False
        self._update(enforce=False)

    model = property(lambda self: self.ctx.model, doc="The model (a rebuilt DistributedDataParallel wrapper after channel removal).")
    training_module = property(
        lambda self: self.ctx.model if self.ctx.training_module is None else self.ctx.training_module,
        doc="What training batches go through: ``model``, or a stage's replacement (QAT's fake-quantized capture).",
    )
    masks = property(lambda self: self.ctx.masks, doc="The MaskSet owning every mask.")
    length = property(lambda self: self.ctx.length, doc="The training length that times resolve against.")
    step_count = property(lambda self: self.ctx.step, doc="Optimizer steps taken so far.")
    params = property(lambda self: self.ctx.params, doc="The parameters in the recipe's scope, by name (current objects).")

    # -- the training-loop surface ------------------------------------------------------------

    def penalty(self) -> Tensor | float:
        """The stages' terms to add to the loss (0.0 when none adds one)."""
        total: Tensor | float = 0.0
        for stage in self.stages:
            term = stage.penalty(self.ctx)
            if isinstance(term, Tensor) or term:
                total = term if isinstance(total, float) and total == 0.0 else total + term
        return total

    def before_step(self) -> None:
        """Before an optimizer step: stages read gradients, then pruned gradients are zeroed where that matters."""
        self._refuse_if_hooked("before_step")
        self._before_step()

    def step(self) -> None:
        """After an optimizer step: stages update, masks enforced."""
        self._refuse_if_hooked("step")
        self._after_step()

    def _refuse_if_hooked(self, method: str) -> None:
        if self.finalized:
            raise UsageError(f"pruner.{method}() after finalize(): the pruner is detached; build a new Pruner to prune again")
        if self._hooks.handles:
            raise UsageError(
                f"this pruner already runs through optimizer.step(); calling pruner.{method}() as well would "
                "advance it twice per step. Drive it by hand only with Pruner(model, None, recipe, ...)"
            )

    def _before_step(self) -> None:
        self.ctx.gradients_pass = False
        for stage in self.stages:
            stage.before_step(self.ctx)
        if not self.ctx.gradients_pass and (not self._elementwise or any(stage.may_revive(self.ctx) for stage in self.stages)):
            self.ctx.masks.mask_gradients_()  # only where it can change a weight (is_elementwise, Stage.may_revive)

    def _after_step(self) -> None:
        for stage in self.stages:
            stage.after_step(self.ctx)
        self.ctx.step += 1
        self._update(enforce=True)
        for stage in self.stages:
            stage.end_step(self.ctx)

    def _update(self, enforce: bool) -> None:
        """Stages decide masks and shapes at this step; the masks are enforced unless a stage just set them."""
        self.ctx.masks_updated = False
        for stage in self.stages:
            stage.update(self.ctx)
        if enforce and not self.ctx.masks_updated:
            self.ctx.masks.apply_()

    def finalize(self) -> nn.Module:
        """Make the sparsity permanent (stages fold in their effect, pruned weights zeroed) and detach from the optimizer.

        The model is an ordinary module before and after; it stays trainable without a pruner.
        """
        for stage in self.stages:
            stage.finalize(self.ctx)
        self.ctx.masks.apply_()
        self.remove_hooks()
        self.finalized = True
        return self.model

    def remove_hooks(self) -> None:
        """Detach from the optimizer (``finalize`` does this too)."""
        self._hooks.remove()

    def on_structure_change(self, callback: Callable[[list[ParameterRemap]], None]) -> None:
        """Call ``callback(remaps)`` after each channel removal, once the optimizer, masks, stages and a DDP wrapper followed."""
        self.ctx.callbacks.append(callback)

    # -- checkpoint state (core/state.py) ------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit: step, masks and each stage's state (format 2)."""
        return save_state(self.recipe, self.stages, self.ctx)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict`` (format 2, or format 1 from earlier releases) from the same recipe."""
        load_state(self.recipe, self.stages, self.ctx, state)
