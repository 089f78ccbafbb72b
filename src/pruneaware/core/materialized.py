"""Refusing models whose tensors hold no data (the ``meta`` device) before any pruning code touches their values."""

from __future__ import annotations

from torch import nn

from pruneaware.core.errors import UsageError


def require_materialized(model: nn.Module, what: str = "pruning") -> None:
    """Raise UsageError naming the first parameter or buffer on the meta device: it has a shape but no values to rank."""
    for kind, tensors in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in tensors:
            if tensor.is_meta:
                raise UsageError(
                    f"{kind} {name!r} of {type(model).__name__} is on the meta device (a shape without values), so {what} "
                    "has nothing to rank; load real weights first, e.g. model.to_empty(device='cpu') then "
                    "load_state_dict(...), or build the model outside torch.device('meta')"
                )
