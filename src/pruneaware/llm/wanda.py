"""Wanda (Sun et al. 2024): prune by |W_ij| * ||X_j||_2, comparing weights within each output row; no weight update."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.llm.sequential import prune_blocks
from pruneaware.llm.statistics import InputStatistics
from pruneaware.llm.targets import SparsityTarget, parse_target


def wanda_scores(weight: Tensor, feature_norms: Tensor) -> Tensor:
    """|W_ij| * ||X_j||: a weight matters as much as the input it multiplies is large."""
    return weight.detach().abs().float() * feature_norms.to(weight.device, torch.float32)[None, :]


def row_wise_keep(scores: Tensor, target: SparsityTarget) -> Tensor:
    """Keep-mask removing the lowest scores of every output row: ``round(sparsity * in_features)`` each, or N:M groups."""
    if target.nm is not None:
        return target.nm.masks({"weight": scores}, target.nm.sparsity)["weight"]
    remove = round(target.sparsity * scores.shape[1])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if remove:
        lowest = torch.topk(scores, remove, dim=1, largest=False, sorted=False).indices
        keep.scatter_(1, lowest, False)
    return keep


@torch.no_grad()
def wanda_prune_layer(linear: nn.Linear, statistics: InputStatistics, target: SparsityTarget) -> Tensor:
    """Zero the Wanda-pruned weights of one Linear in place; returns its keep-mask."""
    keep = row_wise_keep(wanda_scores(linear.weight, statistics.feature_norms()), target)
    linear.weight.mul_(keep)
    return keep


def wanda_prune(model: nn.Module, calibration: Iterable[Any], sparsity: float | str, *, blocks: str | None = None) -> dict[str, Tensor]:
    """One-shot Wanda on every Linear of the transformer blocks, block by block; returns keep-masks by parameter name.

    ``sparsity`` is a fraction (each output row loses exactly that share) or ``"N:M"``;
    ``calibration`` is a list of batches (token-id tensors or dicts of model inputs).
    """
    target = parse_target(sparsity)
    return prune_blocks(
        model, calibration, target, lambda name, linear, stats: wanda_prune_layer(linear, stats, target), hessian=False, blocks=blocks
    )
