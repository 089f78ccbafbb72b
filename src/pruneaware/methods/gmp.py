"""Gradual magnitude pruning (Zhu & Gupta 2017): a cubic ramp of magnitude pruning during training."""

from __future__ import annotations

from typing import Any

from pruneaware.recipe import Recipe


def gradual_magnitude(
    final: float = 0.9,
    *,
    begin: float = 0.1,
    end: float = 0.7,
    every: float | None = None,
    unit: str = "fraction",
    scope: str = "global",
    **recipe_fields: Any,
) -> Recipe:
    """Ramp sparsity from 0 to ``final`` on the cubic schedule between ``begin`` and ``end``.

    The weights keep training after ``end`` at the final sparsity, so the network recovers
    from the last pruning steps. ``scope='global'`` ranks all layers together.
    """
    schedule = {"type": "cubic", "final": final, "begin": begin, "end": end, "every": every, "unit": unit}
    return Recipe.from_dict(
        {
            "name": "gmp",
            "pruning": {"schedule": schedule, "criterion": "magnitude", "granularity": {"type": "element", "scope": scope}},
            **recipe_fields,
        }
    )
