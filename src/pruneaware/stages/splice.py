"""Splicing (dynamic network surgery): pruned weights keep training in a dense shadow until the last mask update."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pruneaware.core.context import Context
from pruneaware.core.stage import Stage
from pruneaware.schedules import Schedule
from pruneaware.rules.splice import Splice


class Splicing(Stage):
    """Keeps the shadows the mask update's splice rule scores: restored before each step, saved after it.

    Pruned weights train on with the straight-through gradient until the schedule's last update;
    the hysteresis that decides which come back is ``splice.masks``, the mask update's rule.
    """

    name = "splice"

    def __init__(self, splice: Splice, schedule: Schedule):
        self.splice, self.schedule = splice, schedule

    def setup(self, ctx: Context) -> None:
        self.masks = ctx.masks
        self.masks.keep_shadows()

    def _splicing(self, ctx: Context) -> bool:
        return ctx.step < self.schedule.last_step

    def before_step(self, ctx: Context) -> None:
        if self._splicing(ctx):
            ctx.masks.restore_shadows_()  # pruned weights train on, with the straight-through gradient
            ctx.gradients_pass = True

    def may_revive(self, ctx: Context) -> bool:
        return self._splicing(ctx)

    def after_step(self, ctx: Context) -> None:
        if self._splicing(ctx):
            ctx.masks.save_shadows_()  # before pruned weights are zeroed again

    def last_change(self, ctx: Context) -> int | None:
        return self.schedule.last_step

    def state_dict(self) -> dict[str, Any]:
        return {"shadows": self.masks.shadow_state_dict()}

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        ctx.masks.load_shadow_state_dict(state["shadows"])
