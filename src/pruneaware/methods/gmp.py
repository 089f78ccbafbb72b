"""Gradual magnitude pruning (Zhu & Gupta 2017): a cubic ramp of magnitude pruning during training."""

from __future__ import annotations

from typing import Any

from pruneaware.methods.common import allocation_of
from pruneaware.recipe import Recipe


def gradual_magnitude(
    final: float = 0.9,
    *,
    begin: float = 0.1,
    end: float = 0.7,
    every: float | None = None,
    unit: str = "fraction",
    allocation: str = "global",
    **recipe_fields: Any,
) -> Recipe:
    """Ramp sparsity from 0 to ``final`` on the cubic schedule between ``begin`` and ``end``.

    The weights keep training after ``end`` at the final sparsity, so the network recovers
    from the last pruning steps. ``allocation='global'`` ranks all layers together; ``scope={...}`` is the
    recipe's scope section (which layers are pruned).
    """
    return cubic_ramp("gmp", "magnitude", final, begin, end, every, unit, allocation_of(allocation, recipe_fields), recipe_fields)


def cubic_ramp(
    name: str, criterion: str, final: float, begin: float, end: float, every: float | None, unit: str, allocation: str, recipe_fields: dict[str, Any]
) -> Recipe:
    """Element pruning on a cubic ramp with ``criterion``: the shape gradual methods share."""
    pruning = {"schedule": cubic_schedule(final, begin, end, every, unit), "criterion": criterion, "granularity": {"type": "element", "scope": allocation}}
    return Recipe.from_dict({"name": name, "pruning": pruning, **recipe_fields})


def cubic_schedule(final: float, begin: float, end: float, every: float | None, unit: str) -> dict[str, Any]:
    """The recipe dict of a cubic ramp from 0 to ``final`` between ``begin`` and ``end``."""
    return {"type": "cubic", "final": final, "begin": begin, "end": end, "every": every, "unit": unit}
