"""The Pruner: a thin driver that runs a recipe's stages inside any training loop, through the optimizer's step hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.compose import as_recipe, compose
from pruneaware.core.context import Context
from pruneaware.core.legacy import ATTRIBUTES, legacy_attribute
from pruneaware.core.stage import Stage
from pruneaware.core.state import STATE_FORMAT, load_state, save_state
from pruneaware.distributed.fsdp import adapt_stages, mask_set_for
from pruneaware.distributed.sync import RankZeroSync, resolve_sync
from pruneaware.core.errors import UsageError
from pruneaware.core.materialized import require_materialized
from pruneaware.core.optimizer_hooks import LearningRates, attach_step_hooks, claim, release
from pruneaware.probing.calibration import Calibration, LossFn
from pruneaware.recipe import Recipe, TrainingLength
from pruneaware.schedules import Schedule
from pruneaware.structured.surgery import ParameterRemap
from pruneaware.measure.sparsity import Summary, summarize

__all__ = ["STATE_FORMAT", "Pruner"]


class Pruner:
    """Runs a recipe inside training: its stages (mask updates, regularizers, channel removal, ...) advanced every step.

    With an optimizer, a pre-step hook (stages read gradients, pruned gradients are zeroed) and a
    post-step hook (stages update, masks enforced) make ``optimizer.step()`` all a loop calls.
    Without one, call ``pruner.step()`` after each optimizer step (and ``pruner.before_step()``
    before it when a stage reads gradients). Criteria that probe the model read the first batches
    of ``calibration_data`` scored by ``loss_fn``; ``synflow`` and structured pruning need
    ``example_inputs``. In a process group (``sync='auto'``) every rank adopts rank 0's decisions,
    and a DistributedDataParallel ``model`` is rebuilt after channel removal: forward through
    ``pruner.model``.

    Example::

        pruner = Pruner(model, optimizer, "recipe.yaml", steps_per_epoch=len(loader), epochs=10)
        for epoch in range(10):
            for x, y in loader:
                loss = loss_fn(model(x), y) + pruner.penalty()
                optimizer.zero_grad(); loss.backward(); optimizer.step()
        pruner.finalize()
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
        ctx = self.ctx = Context(model, optimizer, None, length, Calibration(calibration_data, loss_fn, example_inputs), resolve_sync(sync), example_inputs)  # type: ignore[arg-type]
        self.stages = compose(self.recipe, ctx)
        ctx.stages = self.stages
        changes_structure = any(stage.changes_structure for stage in self.stages)
        for stage in self.stages:
            if changes_structure and not stage.follows_structure:
                raise stage.cannot_follow_structure()
        ctx.masks = mask_set_for(self.recipe.scope.build(), ctx.module, keep_zeros=not changes_structure)  # names as in the bare model
        self.stages = ctx.stages = adapt_stages(self.stages, ctx)  # on fully_shard's shards: the stages that run there, or a refusal
        ctx._learning_rates = LearningRates(optimizer, ctx.params) if optimizer is not None else None
        for stage in self.stages:
            stage.setup(ctx)
        if optimizer is not None:
            claim(optimizer, self)
        self._hooks = attach_step_hooks(optimizer, self._before_step, self._after_step) if optimizer is not None else []
        self.finalized = False
        self._update(enforce=False)

    model = property(lambda self: self.ctx.model, doc="The model (a rebuilt DistributedDataParallel wrapper after channel removal).")
    masks = property(lambda self: self.ctx.masks, doc="The MaskSet owning every mask.")
    length = property(lambda self: self.ctx.length, doc="The training length that times resolve against.")
    step_count = property(lambda self: self.ctx.step, doc="Optimizer steps taken so far.")
    params = property(lambda self: self.ctx.params, doc="The parameters in the recipe's scope, by name (current objects).")

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (``prune``, ``channels``, ``regularizer``, ...)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UsageError(f"this run has no stage {name!r}; its stages are {[s.name for s in self.stages]}")

    def __getattr__(self, attribute: str) -> Any:
        if attribute in ATTRIBUTES and "stages" in self.__dict__:
            return legacy_attribute(self.stages, attribute)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}")

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
        """Before an optimizer step: stages read gradients, then pruned gradients are zeroed."""
        self._refuse_if_hooked("before_step")
        self._before_step()

    def step(self) -> None:
        """After an optimizer step: stages update, masks enforced."""
        self._refuse_if_hooked("step")
        self._after_step()

    def _refuse_if_hooked(self, method: str) -> None:
        if self.finalized:
            raise UsageError(f"pruner.{method}() after finalize(): the pruner is detached; build a new Pruner to prune again")
        if self._hooks:
            raise UsageError(
                f"this pruner already runs through optimizer.step(); calling pruner.{method}() as well would "
                "advance it twice per step. Drive it by hand only with Pruner(model, None, recipe, ...)"
            )

    def _before_step(self) -> None:
        self.ctx.gradients_pass = False
        for stage in self.stages:
            stage.before_step(self.ctx)
        if not self.ctx.gradients_pass:
            self.ctx.masks.mask_gradients_()

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

    def target_sparsity(self) -> float:
        """The sparsity the run aims for now: the last stage that sets a target (mask stages follow channel removal)."""
        targets = [t for t in (stage.target(self.ctx) for stage in self.stages) if t is not None]
        return targets[-1] if targets else 0.0

    def target_schedule(self) -> Schedule | None:
        """The schedule behind ``target_sparsity`` (for plots), or None."""
        schedules = [stage.schedule for stage in self.stages if stage.schedule is not None]
        return schedules[-1] if schedules else None

    def last_change_step(self) -> int | None:
        """The step after which no stage changes a mask or a shape (None: a stage re-decides masks at every step)."""
        steps = [stage.last_change(self.ctx) for stage in self.stages]
        return None if None in steps else max([0, *steps])

    def summary(self) -> Summary:
        """Per-layer and total sparsity counted from the weights themselves."""
        return summarize(self.model, self.params, target=self.target_sparsity())

    def finalize(self) -> nn.Module:
        """Make the sparsity permanent: stages fold in their effect, pruned weights are zeroed, the optimizer detached.

        The model is an ordinary module before and after; it stays trainable without a pruner.
        """
        for stage in self.stages:
            stage.finalize(self.ctx)
        self.ctx.masks.apply_()
        self.remove_hooks()
        self.finalized = True
        return self.model

    def on_structure_change(self, callback: Callable[[list[ParameterRemap]], None]) -> None:
        """Call ``callback(remaps)`` after each channel removal, once the optimizer, masks, stages and a DDP wrapper followed."""
        self.ctx.callbacks.append(callback)

    def remove_hooks(self) -> None:
        """Detach from the optimizer (``finalize`` does this too)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        if self.optimizer is not None:
            release(self.optimizer, self)

    # -- checkpointing --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit: step, masks and each stage's state (format 2)."""
        return save_state(self.recipe, self.stages, self.ctx)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict`` (format 2, or format 1 from earlier releases) from the same recipe."""
        load_state(self.recipe, self.stages, self.ctx, state)
