"""Schedules: the target sparsity at each step (one-shot, constant, ramps, iterative rounds)."""

from pruneaware.schedules.kinds import (
    Constant,
    Exponential,
    Iterative,
    Linear,
    OneShot,
    Polynomial,
    Schedule,
    check_sparsity,
    geometric_targets,
)

__all__ = ["Constant", "Exponential", "Iterative", "Linear", "OneShot", "Polynomial", "Schedule", "check_sparsity", "geometric_targets"]
