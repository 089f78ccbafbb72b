"""Physical channel removal that keeps every reference to the model's parameters consistent.

Torch-Pruning replaces each pruned parameter by a new ``nn.Parameter`` (with ``requires_grad=True``
even for frozen layers) and knows nothing of optimizer state. Before a group is pruned we put a
*provenance code* in every parameter it touches — the index of each element, as a float — so after
pruning each new parameter holds the original flat indices of its surviving elements, whatever
the layer type (grouped convolutions, attention projections pruned twice, free parameters). The
same indices then slice the real weights, the optimizer's state and the masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.errors import TraceError, UsageError


@dataclass(frozen=True)
class ParameterRemap:
    """``new`` replaced ``old``; ``kept`` are the flat indices of ``old`` that ``new`` holds, in order."""

    old: nn.Parameter
    new: nn.Parameter
    kept: Tensor

    def slice(self, tensor: Tensor) -> Tensor:
        """Carry a tensor shaped like the old parameter (state, mask, gradient) over to the new shape."""
        return tensor.reshape(-1)[self.kept.to(tensor.device)].reshape(self.new.shape)


@dataclass
class _Tracked:
    owner: nn.Module
    name: str
    old: nn.Parameter
    data: Tensor
    requires_grad: bool


def provenance_codes(param: Tensor) -> Tensor:
    """The flat index of every element, in the narrowest float type that holds them all exactly."""
    dtype = torch.float32 if param.numel() <= 2**24 else torch.float64
    return torch.arange(param.numel(), dtype=dtype, device=param.device).reshape(param.shape)


def _group_parameters(group: Any) -> list[nn.Parameter]:
    params: list[nn.Parameter] = []
    for dep, _ in group:
        target = dep.target.module
        if isinstance(target, nn.Parameter):
            params.append(target)
        elif isinstance(target, nn.Module):
            params.extend(target.parameters(recurse=False))
    return params


def prune_group_tracked(model: nn.Module, group: Any) -> list[ParameterRemap]:
    """Prune one Torch-Pruning group and return how each replaced parameter maps to its old self.

    Real values, dtypes and ``requires_grad`` are restored on the new parameters.
    """
    owners = {id(p): (module, name) for module in model.modules() for name, p in module._parameters.items() if p is not None}
    tracked: list[_Tracked] = []
    seen: set[int] = set()
    for param in _group_parameters(group):
        if id(param) in seen or id(param) not in owners:
            continue
        seen.add(id(param))
        owner, name = owners[id(param)]
        tracked.append(_Tracked(owner, name, param, param.data, param.requires_grad))
        param.data = provenance_codes(param)
        param.grad = None  # gradients are recomputed by the next backward; stale ones must not be sliced
    try:
        group.prune()
    except Exception as error:
        for item in tracked:
            if item.owner._parameters[item.name] is item.old:
                item.old.data = item.data
        raise TraceError(f"removing channels failed ({type(error).__name__}: {error}); the model may be partly pruned") from None
    remaps = []
    for item in tracked:
        new = item.owner._parameters[item.name]
        if new is item.old:
            item.old.data = item.data
            continue
        kept = new.data.reshape(-1).long()
        new.data = item.data.reshape(-1)[kept].reshape(new.shape)
        new.requires_grad_(item.requires_grad)
        remaps.append(ParameterRemap(item.old, new, kept))
    return remaps


def remap_optimizer(optimizer: torch.optim.Optimizer, remaps: Sequence[ParameterRemap]) -> None:
    """Swap replaced parameters in the param groups and slice their state (momentum, Adam moments).

    Scalar state such as Adam's step count is kept; a state tensor that is neither scalar nor
    shaped like its parameter cannot be sliced safely and raises UsageError.
    """
    by_old = {id(remap.old): remap for remap in remaps}
    for group in optimizer.param_groups:
        group["params"] = [by_old[id(p)].new if id(p) in by_old else p for p in group["params"]]
    for remap in remaps:
        state = optimizer.state.pop(remap.old, None)
        if state is None:
            continue
        optimizer.state[remap.new] = {key: _slice_state(key, value, remap) for key, value in state.items()}


def _slice_state(key: str, value: Any, remap: ParameterRemap) -> Any:
    if not isinstance(value, Tensor) or value.dim() == 0:
        return value
    if value.shape != remap.old.shape:
        raise UsageError(
            f"optimizer state {key!r} has shape {tuple(value.shape)}, not its parameter's {tuple(remap.old.shape)}; "
            "this optimizer's state cannot be sliced after channel removal (use SGD, Adam or AdamW)"
        )
    return remap.slice(value)


def chain(remaps: Iterable[ParameterRemap]) -> list[ParameterRemap]:
    """Compose remaps of successive prunes (a parameter replaced twice maps from the first to the last)."""
    by_new: dict[int, ParameterRemap] = {}
    for remap in remaps:
        earlier = by_new.pop(id(remap.old), None)
        if earlier is not None:
            remap = ParameterRemap(earlier.old, remap.new, earlier.kept[remap.kept.to(earlier.kept.device)])
        by_new[id(remap.new)] = remap
    return list(by_new.values())
