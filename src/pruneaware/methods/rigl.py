"""RigL (Evci et al. 2020): sparse from the start, connections dropped by magnitude and grown by gradient."""

from __future__ import annotations

from typing import Any

from pruneaware.recipe import Recipe


def rigl(
    sparsity: float = 0.9,
    *,
    fraction: float = 0.3,
    end: float = 0.75,
    every: float | None = None,
    allocation: str = "erk",
    decay: str = "cosine",
    unit: str = "fraction",
    seed: int = 0,
    **recipe_fields: Any,
) -> Recipe:
    """A random sparse topology at ``sparsity`` before the first step, rewired every ``every`` until ``end``.

    Layer densities follow ``allocation`` (``erk``, ``er``, ``layer`` for uniform); each rewiring
    swaps a cosine-decaying ``fraction`` of every layer's active weights, so sparsity never changes.
    """
    schedule = {"type": "constant", "sparsity": sparsity, "begin": 0.0, "end": end, "every": every, "unit": unit}
    pruning = {
        "schedule": schedule,
        "criterion": "random",
        "criterion_options": {"seed": seed},
        "granularity": {"type": "element", "scope": allocation},
        "regrow": {"fraction": fraction, "decay": decay},
    }
    return Recipe.from_dict({"name": "rigl", "pruning": pruning, **recipe_fields})
