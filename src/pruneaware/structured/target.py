"""Resource targets for structured pruning: stop as soon as MACs or parameters fall to a fraction of dense."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pruneaware.measure import count_parameters

ResourceKind = Literal["macs", "params"]


def forward_macs(model: nn.Module, example_inputs: Any) -> int:
    """MACs of one eval-mode forward on ``example_inputs`` (a tensor, a tuple of positional inputs, or a dict)."""
    modes = [(module, module.training) for module in model.modules()]
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            if isinstance(example_inputs, Mapping):
                model(**example_inputs)
            elif isinstance(example_inputs, (tuple, list)):
                model(*example_inputs)
            else:
                model(example_inputs)
    finally:
        for module, training in modes:
            module.train(training)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class ResourceTarget:
    """Pruning stops once ``kind`` (MACs of a forward, or parameter count) is at most ``fraction`` of the dense model's."""

    kind: ResourceKind
    fraction: float

    def measure(self, model: nn.Module, example_inputs: Any) -> int:
        """The resource as the model is now."""
        return forward_macs(model, example_inputs) if self.kind == "macs" else count_parameters(model)

    def met(self, value: int, dense: int) -> bool:
        return value <= self.fraction * dense
