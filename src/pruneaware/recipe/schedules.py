"""Recipe building blocks shared by every section: the spec base class, training length, schedules.

Times are given in steps, epochs or fractions of training and resolved to optimizer steps once the
Pruner knows the training length. Everything that can be checked without that length (finite
values, fractions within [0, 1], whole steps, ``begin <= end``) is checked when the recipe is
validated; errors name the schedule's own section (``structured.schedule.final``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, Strict, ValidationInfo, field_validator, model_validator

from pruneaware import schedules
from pruneaware.core.errors import ConfigError
from pruneaware.recipe.bounds import MAX_SPARSITY, Count, Exponent, Time

Unit = Literal["step", "epoch", "fraction"]
T = TypeVar("T")


def _sparsity(value: float) -> float:
    if not 0.0 <= value <= MAX_SPARSITY:
        raise ValueError(f"a fraction in [0, {MAX_SPARSITY}], e.g. 0.9 for 90% of weights removed (1.0 would remove every weight)")
    return value


Sparsity = Annotated[float, Strict(), Field(allow_inf_nan=False), AfterValidator(_sparsity)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TrainingLength(BaseModel):
    """How long training is, so times in epochs or fractions resolve to optimizer steps."""

    steps_per_epoch: int | None = None
    total_steps: int | None = None

    def steps(self, value: float | None, unit: Unit, field: str) -> int:
        """Convert a time in ``unit`` to a step count."""
        if value is None:  # "every" left out: once per epoch, or every step without epochs
            return self.steps_per_epoch or 1
        if not math.isfinite(value) or value < 0:
            raise ConfigError(field, value, f"a finite time >= 0 in {unit}s")
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

    _section: str = PrivateAttr("pruning.schedule")

    def within(self, section: str) -> None:
        """Record the recipe section this schedule belongs to, so build-time errors name it."""
        self._section = f"{section}.schedule"

    @field_validator("begin", "end", "at", "every", check_fields=False)
    @classmethod
    def _time_in_unit(cls, value: float | None, info: ValidationInfo) -> float | None:
        unit = info.data.get("unit", "fraction")
        if value is None:
            return value
        if info.field_name == "every" and value <= 0:
            raise ValueError(f"a positive time between mask updates, in {unit}s")
        if unit == "fraction" and value > 1:
            raise ValueError("a fraction of training in [0, 1] (or unit: step / epoch for counts)")
        if unit == "step" and value != int(value):
            raise ValueError("a whole number of steps (or unit: fraction for fractions of training)")
        return value

    def _build(self, make: Callable[[], T]) -> T:
        """Call ``make``; a schedule's own ConfigError (``schedule.begin``) is renamed into this section."""
        try:
            return make()
        except ConfigError as error:
            if not error.field.startswith("schedule."):
                raise
            raise ConfigError(f"{self._section}.{error.field.removeprefix('schedule.')}", error.value, error.expected) from None

    def _steps(self, length: TrainingLength, name: str) -> int:
        return length.steps(getattr(self, name), self.unit, f"{self._section}.{name}")

    def _every(self, length: TrainingLength) -> int:
        return max(self._steps(length, "every"), 1)  # a fraction of a short run can round to 0 steps


def _ordered(spec: ConstantSpec | RampSpec) -> None:
    if spec.end < spec.begin:
        raise ValueError(f"'end' ({spec.end}) at or after 'begin' ({spec.begin})")


class OneShotSpec(_ScheduleSpec):
    type: Literal["one_shot"]
    sparsity: Sparsity
    at: Time = 0.0

    def build(self, length: TrainingLength) -> schedules.Schedule:
        return self._build(lambda: schedules.OneShot(self.sparsity, self._steps(length, "at")))

    @property
    def final(self) -> float:
        return self.sparsity


class ConstantSpec(_ScheduleSpec):
    type: Literal["constant"]
    sparsity: Sparsity
    begin: Time = 0.0
    end: Time = 1.0
    every: Time | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ConstantSpec:
        _ordered(self)
        return self

    def build(self, length: TrainingLength) -> schedules.Schedule:
        return self._build(
            lambda: schedules.Constant(self.sparsity, self._steps(length, "begin"), self._steps(length, "end"), self._every(length))
        )

    @property
    def final(self) -> float:
        return self.sparsity


class RampSpec(_ScheduleSpec):
    type: Literal["linear", "polynomial", "cubic", "exponential"]
    final: Sparsity
    initial: Sparsity = 0.0
    begin: Time = 0.0
    end: Time = 1.0
    every: Time | None = None
    power: Exponent = 3.0

    @model_validator(mode="after")
    def _ordered(self) -> RampSpec:
        _ordered(self)
        if self.initial > self.final:
            raise ValueError(f"'initial' ({self.initial}) at most 'final' ({self.final})")
        return self

    def build(self, length: TrainingLength) -> schedules.Schedule:
        return self._build(lambda: self._make(length))

    def _make(self, length: TrainingLength) -> schedules.Schedule:
        times = (self._steps(length, "begin"), self._steps(length, "end"), self._every(length))
        if self.type == "linear":
            return schedules.Linear(self.initial, self.final, *times)
        if self.type == "exponential":
            return schedules.Exponential(self.initial, self.final, *times)
        power = 3.0 if self.type == "cubic" else self.power
        return schedules.Polynomial(self.initial, self.final, *times, power=power)


class IterativeSpec(_ScheduleSpec):
    type: Literal["iterative"]
    keep: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.8
    rounds: Count
    begin: Time = 0.0
    every: Time | None = None

    @field_validator("rounds")
    @classmethod
    def _reachable(cls, rounds: int, info: ValidationInfo) -> int:
        keep = info.data.get("keep")
        if keep is not None and 1.0 - keep**rounds > MAX_SPARSITY:
            most = max(1, math.floor(math.log(1.0 - MAX_SPARSITY) / math.log(keep)))
            raise ValueError(
                f"at most {most} rounds with keep {keep}: {rounds} rounds would leave {keep**rounds:.3g} of the weights "
                f"(sparsity above {MAX_SPARSITY}); use fewer rounds or a larger keep"
            )
        return rounds

    def build(self, length: TrainingLength) -> schedules.Schedule:
        return self._build(lambda: schedules.Iterative(self.keep, self.rounds, self._steps(length, "begin"), self._every(length)))

    @property
    def final(self) -> float:
        return 1.0 - self.keep**self.rounds


ScheduleSpec = Annotated[Union[OneShotSpec, ConstantSpec, RampSpec, IterativeSpec], Field(discriminator="type")]
