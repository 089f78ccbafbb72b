"""N:M sparsity trained with SR-STE (Zhou et al. 2021): the pattern follows the dense weights all through training."""

from __future__ import annotations

from typing import Any

from pruneaware.recipe import Recipe


def sr_ste(n: int = 2, m: int = 4, *, decay: float = 2e-4, **recipe_fields: Any) -> Recipe:
    """N:M-sparse forward from the first step, dense weights updated by straight-through gradients plus ``decay`` on pruned ones.

    Masks are recomputed from the dense magnitudes after every step, so pruned positions move.
    """
    regularizer = {"type": "sr_ste", "n": n, "m": m, "decay": decay}
    return Recipe.from_dict({"name": f"sr-ste-{n}-{m}", "regularizer": regularizer, **recipe_fields})
