"""Element regularizers and reparametrizations (L1/proximal, L0 gates, SR-STE, learned movement scores) as a stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from pruneaware.core.context import Context
from pruneaware.core.stage import Stage
from pruneaware.regularizers.base import Regularizer
from pruneaware.structured.surgery import ParameterRemap


class Regularization(Stage):
    """Drives a ``Regularizer``: its loss term, its updates around each step, and the masks it decides (L0, SR-STE, movement)."""

    name = "regularizer"

    def __init__(self, regularizer: Regularizer):
        self.regularizer = regularizer
        self.follows_structure = regularizer.follows_structure
        self.revives_pruned = regularizer.decides_masks  # learned gates and scores may reopen a weight
        self.schedule = getattr(regularizer, "schedule", None)  # top-k movement's target schedule

    def setup(self, ctx: Context) -> None:
        self.regularizer.start(ctx.params)
        self._take_masks(ctx)

    def penalty(self, ctx: Context) -> Tensor | float:
        return self.regularizer.penalty(ctx.params)

    def before_step(self, ctx: Context) -> None:
        self.regularizer.before_step(ctx.params, ctx.masks)
        if self.regularizer.straight_through:
            ctx.gradients_pass = True

    def after_step(self, ctx: Context) -> None:
        learning_rates = ctx.learning_rates(self.name)  # frozen parameters have none and are left alone
        self.regularizer.after_step({n: p for n, p in ctx.params.items() if n in learning_rates}, learning_rates)
        self._take_masks(ctx)

    def finalize(self, ctx: Context) -> None:
        self.regularizer.finalize(ctx.params)
        self._take_masks(ctx)

    def _take_masks(self, ctx: Context) -> None:
        """Install the masks a reparametrizing regularizer (L0, SR-STE, movement scores) decided, if any."""
        masks = self.regularizer.keep_masks(ctx.masks)
        if masks is not None:
            ctx.masks.update(masks)

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        if not self.follows_structure:
            raise self.cannot_follow_structure()

    def target(self, ctx: Context) -> float | None:
        return self.regularizer.target()

    def last_change(self, ctx: Context) -> int | None:
        return None if self.regularizer.decides_masks else 0

    def state_dict(self) -> dict[str, Any]:
        return self.regularizer.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        self.regularizer.load_state_dict(state)
