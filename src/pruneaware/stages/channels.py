"""Channel and head removal with its phases and targets, and the channel-group regularizers, as stages."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from pruneaware.core.context import Context
from pruneaware.core.stage import Stage
from pruneaware.core.errors import ConfigError
from pruneaware.recipe import Recipe
from pruneaware.core.scope import last_module_of_type, modules_matching
from pruneaware.stages.prune import check_fits_training
from pruneaware.structured.channels import ChannelPruner
from pruneaware.structured.support import check_supported
from pruneaware.structured.surgery import ParameterRemap

log = logging.getLogger(__name__)


class ChannelRemoval(Stage):
    """Removes (or, in a soft phase, first zeroes) the least important channel groups at each update of its schedule.

    Every removal is announced through the context, so the optimizer, the masks, the other stages,
    a DDP wrapper and the user's callbacks follow the replaced parameters.
    """

    name = "channels"
    changes_structure = True
    follows_structure = True
    revives_pruned = False

    def __init__(self, recipe: Recipe, ctx: Context):
        spec = recipe.structured
        if ctx.example_inputs is None:
            raise ConfigError("example_inputs", None, "a batch of example inputs: structured pruning traces the model with it")
        schedule = spec.schedule.build(ctx.length)
        check_fits_training(schedule, ctx, "structured.schedule")
        remove_step = spec.removal_step(ctx.length)
        total = ctx.length.total_steps
        if remove_step is not None and total is not None and remove_step > total:
            raise ConfigError("structured.remove_at", f"step {remove_step}", f"a step by the end of training ({total})")
        module = ctx.module
        ignored = modules_matching(module, spec.ignore)
        classifier = last_module_of_type(module, recipe.scope.modules) if recipe.scope.skip_last else None
        ignored += [classifier] if classifier is not None else []
        check_supported(module, ctx.example_inputs, ignored)
        self.channels = ChannelPruner(
            module, ctx.example_inputs, schedule, importance=spec.importance, allocation=spec.allocation, ignored=ignored,
            max_layer_ratio=spec.max_layer_ratio, round_to=spec.round_to, phase=spec.phase, remove_step=remove_step,
            target=spec.target.build() if spec.target is not None else None, heads=spec.heads, sync=ctx.sync,
        )
        self.schedule = schedule

    def before_step(self, ctx: Context) -> None:
        self.channels.observe()

    def update(self, ctx: Context) -> None:
        remaps = self.channels.update(ctx.step)
        if remaps:
            ctx.announce_structure_change(remaps)
            log.debug("step %d: removed channels, %d parameters replaced", ctx.step, len(remaps))

    def target(self, ctx: Context) -> float | None:
        return self.schedule.target(ctx.step)

    def last_change(self, ctx: Context) -> int | None:
        return max(self.schedule.last_step, self.channels.remove_step)

    def state_dict(self) -> dict[str, Any]:
        return self.channels.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        """Repeat the saved removals on this (unpruned) model, so saved weights fit it."""
        ctx.announce_structure_change(self.channels.load_state_dict(dict(state)))


class ChannelRegularization(Stage):
    """A penalty on whole channel groups (group lasso, BN scale, growing) that prepares channels for removal."""

    name = "channel_regularizer"
    follows_structure = True
    revives_pruned = False

    def __init__(self, regularizer: Any):
        self.regularizer = regularizer

    def penalty(self, ctx: Context) -> Tensor | float:
        return self.regularizer.penalty(ctx.step)

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """It reads the channel groups from the channel pruner's graph, which follows removals itself."""
