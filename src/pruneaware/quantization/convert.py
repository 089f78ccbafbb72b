"""Convert a QAT-trained module to an int8 model that runs on oneDNN's int8 CPU kernels.

torchao's ``convert_pt2e`` turns fake quantization into a reference graph: int8 weights with
their scales, and quantize/dequantize pairs around float operators. Lowering then captures that
graph again (batch dimension still dynamic) and lets inductor's freezing passes fuse each
dequantize -> conv/linear -> quantize pattern into one ``onednn.qconv_pointwise`` /
``onednn.qlinear_pointwise`` call on prepacked int8 weights; the result runs eagerly, without
``torch.compile`` or a C++ compiler.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruneaware.core.errors import TraceError
from pruneaware.measure import SizeReport
from pruneaware.quantization import toolkit
from pruneaware.quantization.modes import switch_flags_only
from pruneaware.quantization.prepare import as_tuple, batch_dynamic
from pruneaware.quantization.weights import QuantizedWeight, graph_state, int8_weights, state_size

INT8_KERNELS = {torch.ops.onednn.qconv_pointwise.default, torch.ops.onednn.qlinear_pointwise.default}


@dataclass(frozen=True)
class Int8Model:
    """A converted model: ``module`` runs int8 kernels; ``weights`` are its int8 weights by fp32 parameter name."""

    module: nn.Module
    reference: torch.fx.GraphModule
    """The quantize/dequantize graph the int8 weights and the stored state are read from (float kernels, same numbers)."""
    weights: dict[str, QuantizedWeight]
    state: dict[str, Tensor]
    """Every tensor the int8 model needs: int8 weights, per-channel scales and zero points, float biases."""
    int8_kernel_calls: int
    """How many conv/linear calls of ``module`` run on int8 kernels (one per quantized weight when all were lowered)."""
    seconds: float

    @property
    def size(self) -> SizeReport:
        """Bytes of the int8 state as ``torch.save`` writes it, raw and gzip."""
        return state_size(self.state)


def convert_int8(prepared: torch.fx.GraphModule, example_inputs: Tensor | tuple[Tensor, ...]) -> Int8Model:
    """The int8 model of a module from ``prepare_qat`` (which is left as it was, still trainable)."""
    started = time.perf_counter()
    ao = toolkit.pt2e()
    inputs = as_tuple(example_inputs)
    snapshot = copy.deepcopy(prepared)  # conversion freezes weights; the trained module stays usable
    snapshot.eval()
    reference = ao.convert(snapshot)
    switch_flags_only(reference)
    module = lower_to_x86(reference, inputs)
    calls = sum(1 for node in module.graph.nodes if node.op == "call_function" and node.target in INT8_KERNELS)
    return Int8Model(module, reference, int8_weights(reference), graph_state(reference), calls, time.perf_counter() - started)


def lower_to_x86(reference: torch.fx.GraphModule, inputs: tuple[Tensor, ...]) -> torch.fx.GraphModule:
    """Fuse the reference graph's quantize/dequantize patterns into oneDNN int8 calls, batch dimension dynamic."""
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    try:
        exported = torch.export.export(reference, inputs, dynamic_shapes=batch_dynamic(inputs))
    except Exception as error:  # torch.export raises many types
        raise TraceError(f"cannot capture the converted int8 graph for lowering: {str(error).strip().splitlines()[0]}") from None
    module = exported.run_decompositions(_composite_decompositions()).module()
    _transposes_as_permutes(module)  # the int8 linear patterns match permute, not t
    with torch.no_grad():
        freezing_passes(module, inputs)
    constant_fold(module)
    _views_as_reshapes(module)
    switch_flags_only(module)
    return module


def _composite_decompositions() -> object:
    """Only the decompositions of composite ops (e.g. linear -> permute + addmm), which the fusion patterns expect."""
    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        if not torch._export.utils._is_cia_op(op):
            del table[op]
    return table


def _transposes_as_permutes(module: torch.fx.GraphModule) -> None:
    for node in list(module.graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.t.default:
            with module.graph.inserting_before(node):
                permute = module.graph.call_function(torch.ops.aten.permute.default, (node.args[0], [1, 0]))
            node.replace_all_uses_with(permute)
            module.graph.erase_node(node)
    module.recompile()


def _views_as_reshapes(module: torch.fx.GraphModule) -> None:
    """int8 convolutions return channels-last tensors, which a ``view`` (e.g. from flatten) cannot reshape without a copy.

    Under ``torch.compile`` inductor would plan the layouts; run eagerly, ``reshape`` copies where it must.
    """
    for node in module.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
    module.recompile()
