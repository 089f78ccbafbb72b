"""Movement pruning (Sanh et al. 2020): keep the weights that fine-tuning moves away from zero.

Three forms. ``movement_pruning``: a cubic ramp with the ``movement`` criterion (top-k of the scores
``-sum_t w * dL/dw`` accumulated over the run; a removed weight stays removed). ``topk_movement``: the
paper's hard movement, learned scores whose top-k is the mask after every step, so removed weights
can return. ``soft_movement``: learned scores kept above a threshold, a regularizer deciding how many.
"""

from __future__ import annotations

from typing import Any

from pruneaware.methods.gmp import cubic_ramp, cubic_schedule
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


def topk_movement(
    final: float = 0.9,
    *,
    begin: float = 0.1,
    end: float = 0.7,
    every: float | None = None,
    unit: str = "fraction",
    allocation: str = "layer",
    init: float = 0.0,
    lr: float = 0.01,
    optimizer: str = "adam",
    **recipe_fields: Any,
) -> Recipe:
    """The paper's hard movement: learned scores (straight-through ``dL/dW' * W``), the mask their top-k after every step.

    k follows the cubic ramp to ``final`` (``every=None``: k moves every step). Pruned weights keep
    their scores learning from their saved values and come back when they overtake a kept weight.
    ``lr`` and ``optimizer`` (``adam`` or ``sgd``) are the scores' own.
    """
    schedule = cubic_schedule(final, begin, end, every, unit)
    regularizer = {"type": "topk_movement", "schedule": schedule, "allocation": allocation, "init": init, "lr": lr, "optimizer": optimizer}
    return Recipe.from_dict({"name": "topk-movement", "regularizer": regularizer, **recipe_fields})


def soft_movement(
    strength: float = 1.0,
    *,
    threshold: float = 0.0,
    init: float = 1.0,
    lr: float = 0.01,
    optimizer: str = "adam",
    **recipe_fields: Any,
) -> Recipe:
    """Soft movement: learned scores S start at ``init``; a weight is kept while its score exceeds ``threshold``.

    Scores follow the straight-through gradient ``dL/dW' * W`` (so they accumulate movement) plus
    the gradient of ``strength * mean(sigmoid(S))`` from ``pruner.penalty()``, which pushes them
    down: the achieved sparsity is set by ``strength`` (and the threshold), not by a target.
    ``lr`` and ``optimizer`` (``adam`` or ``sgd``) are the scores' own.
    """
    regularizer = {"type": "soft_movement", "strength": strength, "threshold": threshold, "init": init, "lr": lr, "optimizer": optimizer}
    return Recipe.from_dict({"name": "soft-movement", "regularizer": regularizer, **recipe_fields})
