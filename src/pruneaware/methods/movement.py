"""Movement pruning (Sanh et al. 2020): keep the weights that fine-tuning moves away from zero.

Hard movement is a cubic ramp with the ``movement`` criterion: top-k of the scores ``-sum_t w * dL/dw``
accumulated over the run.
"""

from __future__ import annotations

from typing import Any

from pruneaware.methods.gmp import cubic_ramp
from pruneaware.recipe import Recipe


def movement_pruning(
    final: float = 0.9,
    *,
    begin: float = 0.1,
    end: float = 0.7,
    every: float | None = None,
    unit: str = "fraction",
    allocation: str = "global",
    **recipe_fields: Any,
) -> Recipe:
    """Hard movement: ramp to ``final`` on the cubic schedule, each update keeping the top-k accumulated movement scores.

    ``begin`` must leave at least one step of gradients before the first update. ``allocation='layer'``
    keeps the same fraction of every layer, as the paper's per-matrix top-k does.
    """
    return cubic_ramp("movement", "movement", final, begin, end, every, unit, allocation, recipe_fields)

