"""Rewinding (lottery tickets): after every mask update the model returns to its state at step k, then is masked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pruneaware.core.context import Context
from pruneaware.core.stage import Stage
from pruneaware.core.errors import UsageError
from pruneaware.rules.rewind import Rewind


class Rewinding(Stage):
    """Snapshot at step k (``end_step``); at each mask update, load it back (and restart the optimizer) and re-apply the masks."""

    name = "rewind"
    revives_pruned = False

    def __init__(self, rewind: Rewind):
        self.rewind = rewind

    def setup(self, ctx: Context) -> None:
        if self.rewind.reset_optimizer and ctx.optimizer is None:
            raise UsageError(
                "pruning.rewind.optimizer 'reset' restarts the optimizer's statistics at each rewind: pass the optimizer "
                "to Pruner, or set optimizer: keep and clear them yourself (optimizer.state.clear())"
            )
        self.rewind.snapshot_if_due(0)

    def update(self, ctx: Context) -> None:
        if ctx.masks_updated:
            self.rewind.rewind_(ctx.step, ctx.optimizer)
            ctx.masks.apply_()  # only the survivors keep their rewound values

    def end_step(self, ctx: Context) -> None:
        self.rewind.snapshot_if_due(ctx.step)

    def state_dict(self) -> dict[str, Any]:
        return {"rewind": self.rewind.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        self.rewind.load_state_dict(state["rewind"])
