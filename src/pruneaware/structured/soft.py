"""Soft channel pruning: zero the parameters a channel group would remove, leaving every shape intact.

Which elements a group removes is whatever Torch-Pruning's handlers slice away, for any layer type.
We learn it without touching the model: each handler runs on a copy of its target holding
*provenance codes* (the flat index of every element); the indices left in the copy are the
survivors, everything else is the soft mask's zeros.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch_pruning._helpers import to_plain_idxs

from pruneaware.structured.surgery import provenance_codes
from torch import Tensor, nn


def _kept_mask(original: Tensor, pruned: Tensor) -> Tensor:
    """True where an element of ``original`` survives in ``pruned`` (which holds provenance codes)."""
    keep = torch.zeros(original.numel(), dtype=torch.bool, device=original.device)
    keep[pruned.detach().reshape(-1).long()] = True
    return keep.reshape(original.shape)


def _dependency_masks(dep: Any, idxs: list[int]) -> dict[nn.Parameter, Tensor]:
    """Keep-masks of the parameters that one dependency of a group would slice."""
    target = dep.target.module
    dep.handler.__self__.pruning_dim = dep.target.pruning_dim
    if isinstance(target, nn.Parameter):
        clone = nn.Parameter(provenance_codes(target), requires_grad=False)
        pruned = dep.handler(clone, idxs)
        return {target: _kept_mask(target, pruned)}
    clone = copy.deepcopy(target)
    originals = dict(target.named_parameters())
    with torch.no_grad():
        for name, param in clone.named_parameters():
            param.data = provenance_codes(param)
    dep.handler(clone, idxs)
    return {originals[name]: _kept_mask(originals[name], param) for name, param in clone.named_parameters() if name in originals}


def group_keep_masks(groups: Iterable[Any]) -> dict[nn.Parameter, Tensor]:
    """For every parameter the groups touch, a boolean mask that is False where removal would cut."""
    masks: dict[nn.Parameter, Tensor] = {}
    for group in groups:
        for dep, idxs in group:
            plain = list(to_plain_idxs(idxs))
            if not plain:
                continue
            for param, keep in _dependency_masks(dep, plain).items():
                masks[param] = masks[param] & keep if param in masks else keep
    return masks


@torch.no_grad()
def zero_removed_(masks: dict[nn.Parameter, Tensor]) -> None:
    """Zero the soft-pruned elements in place (the parameters stay the same objects and shapes)."""
    for param, keep in masks.items():
        param.mul_(keep.to(param.dtype))
