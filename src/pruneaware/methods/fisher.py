"""Gradual pruning by Optimal Brain Damage saliency with the Fisher diagonal (LeCun et al. 1990; Theis et al. 2018)."""

from __future__ import annotations

from typing import Any

from pruneaware.methods.common import allocation_of
from pruneaware.methods.gmp import cubic_ramp
from pruneaware.recipe import Recipe


def fisher_pruning(
    final: float = 0.9,
    *,
    begin: float = 0.1,
    end: float = 0.7,
    every: float | None = None,
    unit: str = "fraction",
    allocation: str = "global",
    **recipe_fields: Any,
) -> Recipe:
    """Cubic ramp to ``final``, each update removing the lowest 0.5 * F_ii * w_i^2 over the steps since the last one.

    ``begin`` must leave at least one step of gradients before the first update.
    """
    return cubic_ramp("fisher", "fisher", final, begin, end, every, unit, allocation_of(allocation, recipe_fields), recipe_fields)
