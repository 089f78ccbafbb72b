"""A dense copy of weights whose forward value is derived from it (gated, or projected to N:M)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.core.errors import StateError


class DenseShadow:
    """Holds the dense weights the optimizer updates while the model's parameters hold what the forward sees.

    ``restore_`` writes the dense values into the parameters just before the optimizer step;
    ``capture_`` saves the stepped values right after it.
    """

    def __init__(self, params: Mapping[str, nn.Parameter]):
        self.dense = {name: param.detach().clone() for name, param in params.items()}

    @torch.no_grad()
    def restore_(self, params: Mapping[str, nn.Parameter]) -> None:
        for name, param in params.items():
            param.copy_(self.dense[name])

    @torch.no_grad()
    def capture_(self, params: Mapping[str, nn.Parameter]) -> None:
        for name, param in params.items():
            self.dense[name].copy_(param)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: tensor.clone().cpu() for name, tensor in self.dense.items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore saved dense weights; names and shapes must match."""
        if set(state) != set(self.dense):
            raise StateError(f"dense weights saved for {sorted(state)}, this run has {sorted(self.dense)}")
        for name, tensor in state.items():
            if tensor.shape != self.dense[name].shape:
                raise StateError(f"dense weight {name!r} saved with shape {tuple(tensor.shape)}, parameter has {tuple(self.dense[name].shape)}")
        for name, tensor in state.items():
            self.dense[name].copy_(tensor)
