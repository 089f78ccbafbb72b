"""L1 sparsity: a penalty (or proximal soft-thresholding) that drives weights to zero while training."""

from __future__ import annotations

from typing import Any

from pruneaware.recipe import Recipe


def l1_sparsity(
    strength: float = 1e-4,
    *,
    proximal: bool = True,
    sparsity: float | None = None,
    at: float = 0.8,
    **recipe_fields: Any,
) -> Recipe:
    """L1-regularized training; with ``sparsity``, finish with a magnitude cut at ``at`` (fraction of training).

    The regularizer makes small weights smaller, so the final cut removes weights the network has
    already learned to do without.
    """
    recipe: dict[str, Any] = {"name": "l1", "regularizer": {"type": "l1", "strength": strength, "proximal": proximal}}
    if sparsity is not None:
        recipe["pruning"] = {"schedule": {"type": "one_shot", "sparsity": sparsity, "at": at}}
    return Recipe.from_dict({**recipe, **recipe_fields})
