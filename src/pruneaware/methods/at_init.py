"""Pruning at initialization: score the untrained model once before the first step, then train the fixed sparse network."""

from __future__ import annotations

from typing import Any

from pruneaware.methods.common import allocation_of
from pruneaware.recipe import Recipe


def _at_init(name: str, criterion: str, sparsity: float, options: dict[str, Any], allocation: str, fields: dict[str, Any]) -> Recipe:
    schedule = {"type": "one_shot", "sparsity": sparsity, "at": 0, "unit": "step"}
    pruning = {"schedule": schedule, "criterion": criterion, "criterion_options": options, "granularity": {"type": "element", "scope": allocation_of(allocation, fields)}}
    return Recipe.from_dict({"name": name, "pruning": pruning, **fields})


def snip(sparsity: float, *, batches: int = 1, allocation: str = "global", **recipe_fields: Any) -> Recipe:
    """SNIP (Lee et al. 2019): keep the weights with the largest |w * dL/dw| on ``batches`` calibration batches.

    Needs ``Pruner(..., calibration_data=loader, loss_fn=loss)``.
    """
    return _at_init("snip", "snip", sparsity, {"batches": batches}, allocation, recipe_fields)


def grasp(sparsity: float, *, batches: int = 1, allocation: str = "global", **recipe_fields: Any) -> Recipe:
    """GraSP (Wang et al. 2020): remove the weights whose removal least reduces gradient flow (largest -w * Hg).

    Needs ``Pruner(..., calibration_data=loader, loss_fn=loss)``.
    """
    return _at_init("grasp", "grasp", sparsity, {"batches": batches}, allocation, recipe_fields)


def synflow(sparsity: float, *, rounds: int = 100, allocation: str = "global", **recipe_fields: Any) -> Recipe:
    """Iterative SynFlow (Tanaka et al. 2020): data-free, ``rounds`` re-scorings toward ``sparsity``, no layer collapse.

    Needs only the input shape: ``Pruner(..., example_inputs=batch)`` (or calibration data).
    """
    return _at_init("synflow", "synflow", sparsity, {"rounds": rounds}, allocation, recipe_fields)
