"""Regrowth (RigL, Evci et al. 2020): swap the weakest active weights for the most promising inactive ones.

At each mask update after the first, every layer drops its ``k`` active weights of smallest
magnitude and grows the ``k`` inactive ones whose dense gradient is largest, so the sparsity stays
exactly where it was while the connectivity moves. ``k`` is a fraction of the layer's active
weights that decays (cosine) to zero at the schedule's last update. Grown weights start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pruneaware.core.errors import ConfigError


@dataclass
class Regrow:
    """Drop-and-grow between the schedule's first update ``begin`` and its last ``end`` (steps)."""

    fraction: float
    begin: int
    end: int
    decay: str = "cosine"
    grads: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError("pruning.regrow.fraction", self.fraction, "a fraction in (0, 1], e.g. 0.3")
        if self.decay not in ("cosine", "constant"):
            raise ConfigError("pruning.regrow.decay", self.decay, ["cosine", "constant"])

    def fraction_at(self, step: int) -> float:
        """Share of each layer's active weights swapped at ``step``: none at the first update, which sets the topology."""
        if step <= self.begin or self.end <= self.begin:
            return 0.0
        if self.decay == "constant":
            return self.fraction
        progress = min((step - self.begin) / (self.end - self.begin), 1.0)
        return self.fraction / 2 * (1 + math.cos(math.pi * progress))

    @torch.no_grad()
    def capture(self, params: Mapping[str, Tensor]) -> None:
        """Before an update step's gradients are masked: keep every weight's |gradient|, pruned ones included."""
        self.grads = {name: param.grad.detach().abs() for name, param in params.items() if param.grad is not None}

    @torch.no_grad()
    def swap(self, masks: Mapping[str, Tensor], params: Mapping[str, Tensor], step: int) -> dict[str, Tensor]:
        """New masks with the same number of active weights per layer; layers without a captured gradient are left alone."""
        fraction, grads = self.fraction_at(step), self.grads
        self.grads = {}
        return {
            name: swap_layer(mask, params[name].detach().abs(), grads[name], fraction) if name in grads and fraction else mask
            for name, mask in masks.items()
        }


def swap_layer(mask: Tensor, magnitude: Tensor, grad: Tensor, fraction: float) -> Tensor:
    """Drop ``floor(fraction * active)`` active weights of least magnitude, grow as many by largest gradient.

    Weights dropped now may be grown back at once (they then keep their value, as in RigL).
    """
    keep = mask.flatten().clone()
    count = int(fraction * int(keep.sum()))
    if count == 0:
        return mask
    weakest = torch.sort(magnitude.flatten().float().masked_fill(~keep, math.inf), stable=True).indices[:count]
    keep[weakest] = False
    strongest = torch.sort(grad.flatten().float().masked_fill(keep, -math.inf), descending=True, stable=True).indices[:count]
    keep[strongest] = True
    return keep.reshape(mask.shape)


@torch.no_grad()
def start_at_zero_(param: Tensor, grown: Tensor, optimizer: torch.optim.Optimizer | None) -> None:
    """Zero newly grown weights and their optimizer statistics, so they enter training as fresh connections.

    Stale momentum or Adam moments from before the weight was pruned would otherwise move it at once.
    """
    param.masked_fill_(grown, 0.0)
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value.masked_fill_(grown, 0)
