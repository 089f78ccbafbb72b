"""The int8 weights of a converted model, found by the fp32 parameter they came from, and its stored state."""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from pruneaware.measure import SizeReport

_decomposed = torch.ops.quantized_decomposed
WEIGHTED_OPS = {
    torch.ops.aten.linear.default,
    torch.ops.aten.conv1d.default,
    torch.ops.aten.conv2d.default,
    torch.ops.aten.conv3d.default,
}
"""Graph ops whose second argument is a weight the x86 quantizer turns into int8."""


@dataclass(frozen=True)
class QuantizedWeight:
    """One int8 weight with its quantization parameters: per channel along ``axis``, or per tensor when ``axis`` is None."""

    values: Tensor
    scale: Tensor
    zero_point: Tensor
    axis: int | None

    def dequantize(self) -> Tensor:
        """The float weight the int8 kernels compute with: ``(values - zero_point) * scale``."""
        shape = [1] * self.values.dim()
        if self.axis is not None:
            shape[self.axis] = -1
        return (self.values.float() - self.zero_point.reshape(shape).float()) * self.scale.reshape(shape).float()


def int8_weights(reference: torch.fx.GraphModule) -> dict[str, QuantizedWeight]:
    """Every int8 weight of a converted (quantize/dequantize) graph, keyed ``<module path>.weight`` like the fp32 parameter."""
    weights = {}
    for node in reference.graph.nodes:
        if node.op != "call_function" or node.target not in WEIGHTED_OPS or len(node.args) < 2:
            continue
        weight = _quantized_weight(reference, node.args[1])
        stack = node.meta.get("nn_module_stack")
        if weight is not None and stack:
            module_path = list(stack.values())[-1][0]
            weights[f"{module_path}.weight"] = weight
    return weights


def graph_state(module: torch.fx.GraphModule) -> dict[str, Tensor]:
    """Every tensor the graph reads (``get_attr``): the state the model needs to run, without unused leftovers."""
    state = {}
    for node in module.graph.nodes:
        if node.op == "get_attr":
            value = _attribute(module, node.target)
            if isinstance(value, Tensor):
                state[node.target] = value.detach()
    return state


def state_size(state: Mapping[str, Tensor]) -> SizeReport:
    """Bytes of ``torch.save(state)``, raw and gzip-compressed (level 6), like ``measure.state_dict_size_bytes``."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    raw = buffer.getvalue()
    return SizeReport(raw=len(raw), compressed=len(gzip.compress(raw, compresslevel=6, mtime=0)))


def _quantized_weight(module: torch.fx.GraphModule, node: torch.fx.Node) -> QuantizedWeight | None:
    """The int8 weight behind a dequantize node, or None when the weight stayed in floating point."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return None
    args = [_attribute(module, arg.target) if isinstance(arg, torch.fx.Node) and arg.op == "get_attr" else arg for arg in node.args]
    if not args or not isinstance(args[0], Tensor):  # an activation: its input is computed, not stored
        return None
    if node.target == _decomposed.dequantize_per_channel.default:
        values, scale, zero_point, axis = args[:4]
        return QuantizedWeight(values, scale, zero_point, int(axis))
    if node.target == _decomposed.dequantize_per_tensor.default:
        values, scale, zero_point = args[:3]
        return QuantizedWeight(values, torch.tensor([float(scale)]), torch.tensor([int(zero_point)]), None)
    return None


def _attribute(module: torch.nn.Module, target: str) -> object:
    for part in target.split("."):
        module = getattr(module, part)
    return module
