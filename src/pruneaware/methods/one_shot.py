"""One-shot pruning and fine-tuning: the post-training baseline pruning-aware methods should beat."""

from __future__ import annotations

from typing import Any

from pruneaware.recipe import Recipe


def one_shot(sparsity: float, *, at: float = 0.5, unit: str = "fraction", criterion: str = "magnitude", **recipe_fields: Any) -> Recipe:
    """Train dense until ``at``, remove ``sparsity`` of the weights at once, fine-tune for the rest.

    ``at=0`` with ``unit='step'`` prunes a pretrained model before the first step.
    """
    schedule = {"type": "one_shot", "sparsity": sparsity, "at": at, "unit": unit}
    return Recipe.from_dict({"name": "one_shot", "pruning": {"schedule": schedule, "criterion": criterion}, **recipe_fields})
