"""Dynamic network surgery (Guo et al. 2016): prune and splice, pruned weights training on in a dense shadow."""

from __future__ import annotations

from typing import Any

from pruneaware.recipe import Recipe


def dynamic_surgery(
    sparsity: float = 0.9,
    *,
    begin: float = 0.0,
    end: float = 0.8,
    every: float | None = None,
    band: float = 0.1,
    unit: str = "fraction",
    allocation: str = "global",
    **recipe_fields: Any,
) -> Recipe:
    """Hold ``sparsity`` from ``begin``, re-deciding the masks by magnitude every ``every`` until ``end``.

    Pruned weights keep receiving (straight-through) updates and are spliced back when their
    magnitude rises above the upper hysteresis threshold; after ``end`` the masks are fixed.
    """
    schedule = {"type": "constant", "sparsity": sparsity, "begin": begin, "end": end, "every": every, "unit": unit}
    pruning = {"schedule": schedule, "criterion": "magnitude", "granularity": {"type": "element", "scope": allocation}, "splice": {"band": band}}
    return Recipe.from_dict({"name": "dns", "pruning": pruning, **recipe_fields})
