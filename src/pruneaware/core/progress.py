"""What a run reports about itself, read from its stages: a stage by name, the target now, the schedule behind it, when masks settle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from pruneaware.core.errors import UsageError
from pruneaware.schedules import Schedule
from pruneaware.measure.sparsity import Summary, summarize

if TYPE_CHECKING:
    from pruneaware.core.context import Context
    from pruneaware.core.stage import Stage


class Progress:
    """The Pruner's reports (a base class of it): every figure is asked of the stages, none is kept here."""

    stages: Sequence[Stage]
    ctx: Context

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (``prune``, ``channels``, ``regularizer``, ``qat``, ...)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise UsageError(f"this run has no stage {name!r}; its stages are {[s.name for s in self.stages]}")

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
        model: nn.Module = self.ctx.model
        return summarize(model, self.ctx.params, target=self.target_sparsity())
