"""Sparsity schedules: pure functions of the optimizer step count.

A schedule answers two questions for a step ``t`` (the number of optimizer steps completed):
``is_update_step(t)`` (should masks be recomputed now?) and ``target(t)`` (the sparsity the pruned
weights should have after step ``t``). ``target`` is a staircase that only moves at update steps,
so it is exactly what the model holds at every step and can be plotted as such.
Step 0 means "before the first optimizer step" (pruning at initialization or of a pretrained model).
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

from pruneaware.core.errors import ConfigError


def check_sparsity(field: str, value: float) -> float:
    """Reject sparsities outside [0, 1): 1.0 would remove every weight."""
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ConfigError(field, value, "a fraction in [0, 1), e.g. 0.9 for 90% of weights removed")
    return float(value)


def _check_steps(begin: int, end: int, every: int) -> None:
    if begin < 0:
        raise ConfigError("schedule.begin", begin, "a step count >= 0")
    if end < begin:
        raise ConfigError("schedule.end", end, f"a step >= begin ({begin})")
    if every < 1:
        raise ConfigError("schedule.every", every, "a positive number of steps between updates")


class Schedule(ABC):
    """Maps a step count to a target sparsity; only ``progress`` differs between ramp schedules."""

    @abstractmethod
    def update_steps(self) -> list[int]:
        """Every step at which masks are recomputed, in increasing order."""

    @abstractmethod
    def value_at(self, step: int) -> float:
        """The sparsity the schedule asks for at an update step ``step``."""

    @property
    @abstractmethod
    def last_step(self) -> int:
        """The last update step: a schedule ending after training ends is a configuration error."""

    def is_update_step(self, step: int) -> bool:
        return step in self._update_set

    def target(self, step: int) -> float:
        """Sparsity in force after ``step``: the value at the latest update step <= ``step`` (0 before any)."""
        position = bisect.bisect_right(self._updates, step)
        return 0.0 if position == 0 else self.value_at(self._updates[position - 1])

    @property
    def final(self) -> float:
        return self.value_at(self.last_step)

    @cached_property
    def _updates(self) -> tuple[int, ...]:
        return tuple(self.update_steps())

    @cached_property
    def _update_set(self) -> frozenset[int]:
        return frozenset(self._updates)


@dataclass(frozen=True)
class OneShot(Schedule):
    """Prune once to ``sparsity`` at step ``at`` (0 = before training): the post-training baseline."""

    sparsity: float
    at: int = 0

    def __post_init__(self) -> None:
        check_sparsity("schedule.sparsity", self.sparsity)
        if self.at < 0:
            raise ConfigError("schedule.at", self.at, "a step count >= 0")

    def update_steps(self) -> list[int]:
        return [self.at]

    def value_at(self, step: int) -> float:
        return self.sparsity

    @property
    def last_step(self) -> int:
        return self.at


@dataclass(frozen=True)
class Constant(Schedule):
    """Hold ``sparsity`` from ``begin`` on, recomputing masks every ``every`` steps until ``end``.

    Used by dynamic sparse training, where the amount stays fixed and only the pattern changes.
    """

    sparsity: float
    begin: int = 0
    end: int = 0
    every: int = 1

    def __post_init__(self) -> None:
        check_sparsity("schedule.sparsity", self.sparsity)
        _check_steps(self.begin, self.end, self.every)

    def update_steps(self) -> list[int]:
        return _grid(self.begin, self.end, self.every)

    def value_at(self, step: int) -> float:
        return self.sparsity

    @property
    def last_step(self) -> int:
        return self.end


@dataclass(frozen=True)
class _Ramp(Schedule):
    """Moves from ``initial`` at ``begin`` to ``final_sparsity`` at ``end``, updating every ``every`` steps."""

    initial: float
    final_sparsity: float
    begin: int
    end: int
    every: int = 1

    def __post_init__(self) -> None:
        check_sparsity("schedule.initial", self.initial)
        check_sparsity("schedule.final", self.final_sparsity)
        if self.final_sparsity < self.initial:
            raise ConfigError("schedule.final", self.final_sparsity, f"a value >= initial ({self.initial})")
        _check_steps(self.begin, self.end, self.every)

    def update_steps(self) -> list[int]:
        return _grid(self.begin, self.end, self.every)

    @property
    def last_step(self) -> int:
        return self.end

    def _fraction(self, step: int) -> float:
        if self.end == self.begin:
            return 1.0
        return min(max((step - self.begin) / (self.end - self.begin), 0.0), 1.0)


@dataclass(frozen=True)
class Linear(_Ramp):
    """Sparsity rises linearly with the step."""

    def value_at(self, step: int) -> float:
        return self.initial + (self.final_sparsity - self.initial) * self._fraction(step)


@dataclass(frozen=True)
class Polynomial(_Ramp):
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt)) ** power``; power 3 is cubic.

    Prunes fast early, while many redundant weights remain, and slowly near the target.
    """

    power: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 < self.power < math.inf):
            raise ConfigError("schedule.power", self.power, "a positive exponent (3 for the cubic schedule)")

    def value_at(self, step: int) -> float:
        remaining = (1.0 - self._fraction(step)) ** self.power
        return self.final_sparsity + (self.initial - self.final_sparsity) * remaining


@dataclass(frozen=True)
class Exponential(_Ramp):
    """Density (1 - sparsity) shrinks geometrically: the same fraction of survivors goes at each update."""

    def value_at(self, step: int) -> float:
        start_density, end_density = 1.0 - self.initial, 1.0 - self.final_sparsity
        return 1.0 - start_density * (end_density / start_density) ** self._fraction(step)


@dataclass(frozen=True)
class Iterative(Schedule):
    """IMP-style rounds: each round keeps ``keep`` of the surviving weights, ``rounds`` times, ``every`` steps apart.

    After round ``k`` (1-based) the sparsity is ``1 - keep ** k``; the first round happens at ``begin``.
    """

    keep: float
    rounds: int
    begin: int
    every: int

    def __post_init__(self) -> None:
        if not (0.0 < self.keep < 1.0):
            raise ConfigError("schedule.keep", self.keep, "the fraction of survivors kept each round, in (0, 1)")
        if self.rounds < 1:
            raise ConfigError("schedule.rounds", self.rounds, "at least 1 round")
        _check_steps(self.begin, self.begin, self.every)

    def update_steps(self) -> list[int]:
        return [self.begin + round_index * self.every for round_index in range(self.rounds)]

    def value_at(self, step: int) -> float:
        completed = (step - self.begin) // self.every + 1
        return 1.0 - self.keep ** min(max(completed, 0), self.rounds)

    @property
    def last_step(self) -> int:
        return self.begin + (self.rounds - 1) * self.every


def _grid(begin: int, end: int, every: int) -> list[int]:
    """``begin, begin + every, ...`` up to ``end``, always ending exactly at ``end``."""
    steps = list(range(begin, end + 1, every))
    if steps[-1] != end:
        steps.append(end)
    return steps


def geometric_targets(start: float, final: float, rounds: int) -> list[float]:
    """Sparsities after each of ``rounds`` prunes from ``start`` to ``final``, density shrinking by a constant factor.

    One mask update reached in rounds (SynFlow) removes the same fraction of survivors each round.
    """
    if rounds <= 1 or final <= start:
        return [final]
    ratio = (1.0 - final) / (1.0 - start)
    return [1.0 - (1.0 - start) * ratio ** (k / rounds) for k in range(1, rounds)] + [final]
