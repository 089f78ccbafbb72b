"""Recipe building blocks shared by every section: the spec base class, training length, schedules.

Times are given in steps, epochs or fractions of training and resolved to optimizer steps once the
Pruner knows the training length.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pruneaware import schedules
from pruneaware.errors import ConfigError

Unit = Literal["step", "epoch", "fraction"]


def _sparsity(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError("a fraction in [0, 1), e.g. 0.9 for 90% of weights removed")
    return value


Sparsity = Annotated[float, AfterValidator(_sparsity)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingLength(BaseModel):
    """How long training is, so times in epochs or fractions resolve to optimizer steps."""

    steps_per_epoch: int | None = None
    total_steps: int | None = None

    def steps(self, value: float | None, unit: Unit, field: str) -> int:
        """Convert a time in ``unit`` to a step count."""
        if value is None:  # "every" left out: once per epoch, or every step without epochs
            return self.steps_per_epoch or 1
        if not math.isfinite(value):
            raise ConfigError(field, value, f"a finite time in {unit}s")
        if unit == "step":
            if value != int(value):
                raise ConfigError(field, value, "a whole number of steps (or unit: 'fraction' for fractions of training)")
            return int(value)
        if unit == "epoch":
            if not self.steps_per_epoch:
                raise ConfigError(field, value, "times in steps, or pass steps_per_epoch= to the Pruner for epoch units")
            return round(value * self.steps_per_epoch)
        if not self.total_steps:
            raise ConfigError(field, value, "times in steps, or pass steps_per_epoch= and epochs= to the Pruner for fractions")
        if not 0.0 <= value <= 1.0:
            raise ConfigError(field, value, "a fraction of training in [0, 1]")
        return round(value * self.total_steps)


class _ScheduleSpec(_Spec):
    unit: Unit = "fraction"
    """Unit of every time field: optimizer steps, epochs, or fractions of the whole run."""

    def _steps(self, length: TrainingLength, name: str) -> int:
        return length.steps(getattr(self, name), self.unit, f"pruning.schedule.{name}")

    def _every(self, length: TrainingLength) -> int:
        every = getattr(self, "every")
        if every is not None and every <= 0:
            raise ConfigError("pruning.schedule.every", every, f"a positive time between mask updates, in {self.unit}s")
        return max(self._steps(length, "every"), 1)  # a fraction of a short run can round to 0 steps


class OneShotSpec(_ScheduleSpec):
    type: Literal["one_shot"]
    sparsity: Sparsity
    at: float = 0.0

    def build(self, length: TrainingLength) -> schedules.Schedule:
        return schedules.OneShot(self.sparsity, self._steps(length, "at"))

    @property
    def final(self) -> float:
        return self.sparsity


class ConstantSpec(_ScheduleSpec):
    type: Literal["constant"]
    sparsity: Sparsity
    begin: float = 0.0
    end: float = 1.0
    every: float | None = None

    def build(self, length: TrainingLength) -> schedules.Schedule:
        return schedules.Constant(self.sparsity, self._steps(length, "begin"), self._steps(length, "end"), self._every(length))

    @property
    def final(self) -> float:
        return self.sparsity


class RampSpec(_ScheduleSpec):
    type: Literal["linear", "polynomial", "cubic", "exponential"]
    final: Sparsity
    initial: Sparsity = 0.0
    begin: float = 0.0
    end: float = 1.0
    every: float | None = None
    power: float = 3.0

    def build(self, length: TrainingLength) -> schedules.Schedule:
        times = (self._steps(length, "begin"), self._steps(length, "end"), self._every(length))
        if self.type == "linear":
            return schedules.Linear(self.initial, self.final, *times)
        if self.type == "exponential":
            return schedules.Exponential(self.initial, self.final, *times)
        power = 3.0 if self.type == "cubic" else self.power
        return schedules.Polynomial(self.initial, self.final, *times, power=power)


class IterativeSpec(_ScheduleSpec):
    type: Literal["iterative"]
    rounds: int
    keep: float = 0.8
    begin: float = 0.0
    every: float | None = None

    def build(self, length: TrainingLength) -> schedules.Schedule:
        return schedules.Iterative(self.keep, self.rounds, self._steps(length, "begin"), self._every(length))

    @property
    def final(self) -> float:
        return 1.0 - self.keep**self.rounds


ScheduleSpec = Annotated[Union[OneShotSpec, ConstantSpec, RampSpec, IterativeSpec], Field(discriminator="type")]
