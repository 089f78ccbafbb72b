"""Regrowth (RigL): at each mask update after the first, drop the weakest active weights and grow as many by gradient."""

from __future__ import annotations

import torch

from pruneaware.core.context import Context
from pruneaware.core.stage import Stage
from pruneaware.rules.regrow import Regrow, start_at_zero_
from pruneaware.schedules import Schedule


class Regrowth(Stage):
    """Reads dense gradients before an update step's pruned gradients are zeroed, then swaps connections after the mask update."""

    name = "regrow"
    revives_pruned = False  # grown weights restart with zero statistics (start_at_zero_)

    def __init__(self, regrow: Regrow, schedule: Schedule):
        self.regrow, self.schedule = regrow, schedule

    def before_step(self, ctx: Context) -> None:
        if self.schedule.is_update_step(ctx.step + 1):
            self.regrow.capture(ctx.params)  # dense gradients for growth, read before pruned ones are zeroed

    @torch.no_grad()
    def update(self, ctx: Context) -> None:
        """Grown weights and their optimizer statistics start at zero."""
        if not ctx.masks_updated:
            return
        old = dict(ctx.masks.masks)
        new_masks = ctx.agreed(self.regrow.swap(old, ctx.params, ctx.step))
        for name, mask in new_masks.items():
            start_at_zero_(ctx.params[name], mask & ~old[name], ctx.optimizer)
        ctx.masks.update(new_masks)

    def last_change(self, ctx: Context) -> int | None:
        return self.schedule.last_step
