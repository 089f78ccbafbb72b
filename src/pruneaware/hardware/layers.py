"""Each timed layer in its real context: its kind, hyper-parameters and input shape, and a standalone copy at any width."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

TIMED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class LayerContext:
    """What a layer's latency depends on, besides its widths: equal contexts are measured once."""

    kind: str
    in_full: int
    out_full: int
    inner_shape: tuple[int, ...]
    """The input's shape without the batch and channel dimensions (spatial size, or tokens before a Linear's features)."""
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: Any = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True
    dtype: str = "float32"

    @property
    def depthwise(self) -> bool:
        """One filter per channel: its input and output widths move together."""
        return self.groups > 1 and self.groups == self.in_full == self.out_full

    def signature(self) -> str:
        """The context as a canonical string: the key equal contexts share a sweep under."""
        return self._signature

    @cached_property
    def _signature(self) -> str:  # asked for on every prediction: computed once per context
        return json.dumps(asdict(self), sort_keys=True)

    def build(self, in_width: int, out_width: int) -> nn.Module:
        """A fresh layer like this one with ``in_width`` input and ``out_width`` output channels."""
        dtype = getattr(torch, self.dtype)
        if self.kind == "Linear":
            return nn.Linear(in_width, out_width, bias=self.bias, dtype=dtype)
        groups = in_width if self.depthwise else self.groups
        conv = getattr(nn, self.kind)
        return conv(in_width, out_width, self.kernel, self.stride, self.padding, self.dilation, groups, self.bias, dtype=dtype)

    def inputs(self, batch: int, in_width: int) -> Tensor:
        """Random inputs of the layer's real shape at ``batch`` and ``in_width`` channels."""
        dtype = getattr(torch, self.dtype)
        if self.kind == "Linear":
            return torch.randn(batch, *self.inner_shape, in_width, dtype=dtype)
        return torch.randn(batch, in_width, *self.inner_shape, dtype=dtype)


def context_of(module: nn.Module, inputs: Tensor) -> LayerContext:
    """The context of ``module`` as seen on one of its forward inputs."""
    dtype = str(inputs.dtype).removeprefix("torch.")
    if isinstance(module, nn.Linear):
        return LayerContext("Linear", module.in_features, module.out_features, tuple(inputs.shape[1:-1]), bias=module.bias is not None, dtype=dtype)
    return LayerContext(
        type(module).__name__, module.in_channels, module.out_channels, tuple(inputs.shape[2:]), tuple(module.kernel_size),
        tuple(module.stride), module.padding if isinstance(module.padding, str) else tuple(module.padding),
        tuple(module.dilation), module.groups, module.bias is not None, dtype,
    )


def layer_widths(module: nn.Module) -> tuple[int, int]:
    """(input, output) channels of a timed layer as it is now."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def capture_contexts(model: nn.Module, example_inputs: Any) -> tuple[dict[str, LayerContext], dict[str, int]]:
    """Every timed layer's context (by module name) and its output elements per channel and sample, from one forward.

    Layers run more than once per forward, or never, are left out (their cost stays in the model's remainder).
    """
    seen: dict[str, list[tuple[LayerContext, int]]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, TIMED):
            def hook(mod: nn.Module, args: tuple[Any, ...], output: Tensor, name: str = name) -> None:
                if args and isinstance(args[0], Tensor) and isinstance(output, Tensor):
                    per_channel = output.numel() // max(output.shape[0], 1) // max(layer_widths(mod)[1], 1)
                    seen.setdefault(name, []).append((context_of(mod, args[0]), per_channel))
            handles.append(module.register_forward_hook(hook))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(**example_inputs) if isinstance(example_inputs, Mapping) else model(example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes:
            m.train(training)
    once = {name: calls[0] for name, calls in seen.items() if len(calls) == 1}
    return {name: c for name, (c, _) in once.items()}, {name: n for name, (_, n) in once.items()}
