"""Physical channel removal that keeps every reference to the model's parameters consistent.

Torch-Pruning replaces each pruned parameter by a new ``nn.Parameter`` (with ``requires_grad=True``
even for frozen layers) and knows nothing of optimizer state. We record how every new parameter
was cut from its predecessor, so the same cuts carry over the optimizer's state and the masks:

- Torch-Pruning's own layer handlers all slice through one helper (``index_select`` along one
  dimension); while a group is pruned that helper is wrapped to log each cut. No copy, no extra pass.
- A handler registered from elsewhere may slice any way it likes; its parameters then hold a
  *provenance code* during pruning (the index of each element, as a float), and the survivors'
  codes are the flat indices they came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch_pruning.pruner import function as tp_function

from pruneaware.core.errors import TraceError, UsageError


@dataclass(frozen=True)
class AxisCut:
    """Keep ``index`` along dimension ``dim``."""

    dim: int
    index: Tensor

    def apply(self, tensor: Tensor) -> Tensor:
        return tensor.index_select(self.dim, self.index.to(tensor.device))


@dataclass(frozen=True)
class FlatCut:
    """Keep the flat positions ``index`` and reshape to ``shape``."""

    index: Tensor
    shape: tuple[int, ...]

    def apply(self, tensor: Tensor) -> Tensor:
        return tensor.reshape(-1)[self.index.to(tensor.device)].reshape(self.shape)


@dataclass(frozen=True)
class ParameterRemap:
    """``new`` replaced ``old``; applying ``cuts`` in order to a tensor shaped like ``old`` gives one shaped like ``new``.

    ``new`` is None when ``old`` left the model with its layer (depth pruning removed the block).
    """

    old: nn.Parameter
    new: nn.Parameter | None
    cuts: tuple[AxisCut | FlatCut, ...]

    def slice(self, tensor: Tensor) -> Tensor:
        """Carry a tensor shaped like the old parameter (state, mask, gradient) over to the new shape."""
        for cut in self.cuts:
            tensor = cut.apply(tensor)
        return tensor


@dataclass
class _Tracked:
    owner: nn.Module
    name: str
    old: nn.Parameter
    requires_grad: bool
    data: Tensor | None = None  # the real values while a provenance code stands in for them


def provenance_codes(param: Tensor) -> Tensor:
    """The flat index of every element, in the narrowest float type that holds them all exactly."""
    dtype = torch.float32 if param.numel() <= 2**24 else torch.float64
    return torch.arange(param.numel(), dtype=dtype, device=param.device).reshape(param.shape)


@contextmanager
def _logging_cuts() -> Iterator[dict[int, tuple[nn.Parameter, AxisCut]]]:
    """Log every slice Torch-Pruning's own handlers make: id(new parameter) -> (parameter it was cut from, cut)."""
    log: dict[int, tuple[nn.Parameter, AxisCut]] = {}
    original = tp_function.BasePruningFunc._prune_parameter_and_grad

    def logged(self: Any, weight: nn.Parameter, keep_idxs: Sequence[int], pruning_dim: int) -> nn.Parameter:
        new = original(self, weight, keep_idxs, pruning_dim)
        log[id(new)] = (weight, AxisCut(pruning_dim % weight.dim(), torch.as_tensor(keep_idxs, dtype=torch.long)))
        return new

    tp_function.BasePruningFunc._prune_parameter_and_grad = logged
    try:
        yield log
    finally:
        tp_function.BasePruningFunc._prune_parameter_and_grad = original


def _logged_cuts(log: dict[int, tuple[nn.Parameter, AxisCut]], old: nn.Parameter, new: nn.Parameter) -> tuple[AxisCut, ...] | None:
    """The cuts that turned ``old`` into ``new``, oldest first; None if the log cannot connect them."""
    cuts: list[AxisCut] = []
    current = new
    while current is not old:
        if id(current) not in log:
            return None
        current, cut = log[id(current)]
        cuts.append(cut)
    return tuple(reversed(cuts))


def _has_foreign_handler(group: Any) -> bool:
    """Whether a dependency that owns parameters is handled by code other than Torch-Pruning's own layer handlers."""
    for dep, _ in group:
        target = dep.target.module
        owns_parameters = isinstance(target, nn.Parameter) or (
            isinstance(target, nn.Module) and next(target.parameters(recurse=False), None) is not None
        )
        if owns_parameters and type(dep.handler.__self__).__module__ != tp_function.__name__:
            return True
    return False


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

    Real values, dtypes and ``requires_grad`` are kept on the new parameters.
    """
    owners = {id(p): (module, name) for module in model.modules() for name, p in module._parameters.items() if p is not None}
    use_codes = _has_foreign_handler(group)
    tracked: list[_Tracked] = []
    seen: set[int] = set()
    for param in _group_parameters(group):
        if id(param) in seen or id(param) not in owners:
            continue
        seen.add(id(param))
        owner, name = owners[id(param)]
        tracked.append(_Tracked(owner, name, param, param.requires_grad))
        param.grad = None  # gradients are recomputed by the next backward; stale ones must not be sliced
        if use_codes:
            tracked[-1].data = param.data
            param.data = provenance_codes(param)
    try:
        with _logging_cuts() as log:
            group.prune()
    except Exception as error:
        for item in tracked:
            if item.data is not None and item.owner._parameters[item.name] is item.old:
                item.old.data = item.data
        raise TraceError(f"removing channels failed ({type(error).__name__}: {error}); the model may be partly pruned") from None
    remaps = []
    for item in tracked:
        new = item.owner._parameters[item.name]
        if new is item.old:
            if item.data is not None:
                item.old.data = item.data
            continue
        remaps.append(_finish(item, new, log))
    return remaps


def _finish(item: _Tracked, new: nn.Parameter, log: dict[int, tuple[nn.Parameter, AxisCut]]) -> ParameterRemap:
    """Describe how ``new`` was cut from ``item.old``, and give it real values and the old ``requires_grad``."""
    if item.data is not None:
        cut = FlatCut(new.data.reshape(-1).long(), tuple(new.shape))
        new.data = cut.apply(item.data)
        cuts: tuple[AxisCut | FlatCut, ...] = (cut,)
    else:
        logged = _logged_cuts(log, item.old, new)
        if logged is None:
            raise TraceError(f"parameter {item.name!r} of {type(item.owner).__name__} was replaced by an unrecorded handler")
        cuts = logged
    new.requires_grad_(item.requires_grad)
    return ParameterRemap(item.old, new, cuts)


def remap_optimizer(optimizer: torch.optim.Optimizer, remaps: Sequence[ParameterRemap]) -> None:
    """Swap replaced parameters in the param groups and slice their state (momentum, Adam moments).

    Scalar state such as Adam's step count is kept; a state tensor that is neither scalar nor
    shaped like its parameter cannot be sliced safely and raises UsageError.
    """
    by_old = {id(remap.old): remap for remap in remaps}
    for group in optimizer.param_groups:
        group["params"] = [by_old[id(p)].new if id(p) in by_old else p for p in group["params"]]
        group["params"] = [p for p in group["params"] if p is not None]  # removed with their layer
    for remap in remaps:
        state = optimizer.state.pop(remap.old, None)
        if state is None or remap.new is None:
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
            remap = ParameterRemap(earlier.old, remap.new, earlier.cuts + remap.cuts)
        by_new[id(remap.new)] = remap
    return list(by_new.values())
