"""L0 regularization with hard-concrete gates (Louizos et al. 2018): gates learn which weights to drop."""

from __future__ import annotations

from typing import Any

from pruneaware.recipe import Recipe


def l0_sparsity(strength: float = 1e-4, *, droprate_init: float = 0.5, lr: float = 0.01, seed: int = 0, **recipe_fields: Any) -> Recipe:
    """Train with a gate per weight and ``strength * sum P(gate open)`` in the loss (add ``pruner.penalty()``).

    Weights whose deterministic gate closes are pruned as training goes; ``finalize()`` folds the
    remaining gates into the weights. ``lr`` is the gates' own Adam learning rate.
    """
    regularizer = {"type": "l0", "strength": strength, "droprate_init": droprate_init, "lr": lr, "seed": seed}
    return Recipe.from_dict({"name": "l0", "regularizer": regularizer, **recipe_fields})
