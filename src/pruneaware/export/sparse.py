"""Unstructured sparse inference on CPU: replace sparse enough layers with sparse-kernel layers where measuring shows it pays.

For each Linear, Conv1d and Conv2d layer with at least ``min_sparsity`` zeros, every candidate
kernel (CSR, COO, BSR for block-sparse weights; ``torch.sparse.mm``, ``torch.addmm``, ``torch.mv``
for one row) is checked against the dense layer and timed side by side with it on the layer's
real input, recorded from one forward pass of the example inputs. The fastest kernel replaces the
layer if it beats dense by ``min_speedup``; otherwise the layer stays dense, and the report says why.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, UsageError
from pruneaware.export.conversion import (
    ConversionReport,
    LayerDecision,
    as_inputs,
    record_inputs,
    replace_modules,
    weight_sparsity,
)
from pruneaware.export.sparse_kernels import DEFAULT_FAMILIES, FAMILIES, Kernel, candidates
from pruneaware.export.sparse_layers import SparseConv, SparseLayer, SparseLinear
from pruneaware.measure import WEIGHTED_LAYERS, compare_latency
from pruneaware.structured.graph import unwrap_model

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
FLOAT_TYPES = (torch.float32, torch.float64)
RTOL = 1e-4
ATOL = 1e-5
"""A kernel must match the dense layer within ``RTOL`` and ``ATOL * max(1, max |dense output|)`` (summation order differs)."""


def to_sparse(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    *,
    min_sparsity: float = 0.5,
    min_speedup: float = 1.1,
    kernels: Sequence[str] = DEFAULT_FAMILIES,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
    rounds: int = 4,
    inplace: bool = False,
) -> ConversionReport:
    """Convert the layers of ``model`` (a copy unless ``inplace``) that run faster sparse on CPU; report every decision.

    Decisions hold for the shapes in ``example_inputs`` and for ``threads`` threads (None: the
    current setting): a kernel that wins at batch 64 may lose at batch 1, so pass inputs of the
    size you will serve. Timing uses ``compare_latency`` (``warmup``, ``repeats``, ``rounds``).
    """
    _check_arguments(min_sparsity, min_speedup, kernels)
    inputs = as_inputs(example_inputs)
    model = unwrap_model(model)
    if not inplace:
        model = copy.deepcopy(model)
    decisions: dict[str, LayerDecision] = {}
    layers: dict[str, nn.Module] = {}
    names: list[str] = []
    for name, layer in model.named_modules():
        if not isinstance(layer, WEIGHTED_LAYERS):
            continue
        names.append(name)
        sparsity = weight_sparsity(layer.weight)
        reason = _unsupported(layer) or _not_sparse_enough(sparsity, min_sparsity)
        if reason:
            decisions[name] = LayerDecision(name, type(layer).__name__, sparsity, None, reason)
        else:
            layers[name] = layer
    if not layers:
        raise UsageError(_nothing_to_convert(list(decisions.values()), min_sparsity))
    recorded = record_inputs(model, layers, inputs)
    replacements: dict[nn.Module, nn.Module] = {}
    timing: dict[str, int | None] = {"warmup": warmup, "repeats": repeats, "rounds": rounds, "threads": threads}
    for name, layer in layers.items():
        if name not in recorded:
            reason = "it did not run on the example inputs, so it could not be measured"
            decisions[name] = LayerDecision(name, type(layer).__name__, weight_sparsity(layer.weight), None, reason)
            continue
        decisions[name], replacement = _decide(name, layer, recorded[name], tuple(kernels), min_speedup, timing)
        if replacement is not None:
            replacements[layer] = replacement
    replace_modules(model, replacements)
    return ConversionReport(model, tuple(decisions[name] for name in names))


def _check_arguments(min_sparsity: float, min_speedup: float, kernels: Sequence[str]) -> None:
    if not 0.0 <= min_sparsity < 1.0:
        raise ConfigError("min_sparsity", min_sparsity, "a fraction in [0, 1)")
    if not min_speedup >= 0.0:
        raise ConfigError("min_speedup", min_speedup, "a ratio >= 0 (0: convert whenever a kernel works)")
    unknown = [family for family in kernels if family not in FAMILIES]
    if unknown or not kernels:
        raise ConfigError("kernels", list(kernels), FAMILIES)


def _unsupported(layer: nn.Module) -> str | None:
    """Why ``layer`` cannot become a sparse CPU layer, or None."""
    if not isinstance(layer, SUPPORTED):
        return f"{type(layer).__name__} is not supported (Linear, Conv1d and Conv2d are)"
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if layer.groups != 1:
            return f"groups={layer.groups}: only convolutions with groups=1 are converted"
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            return f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r}: only numeric zero padding is converted"
    if layer.weight.device.type != "cpu":
        return f"its weight is on {layer.weight.device}; to_sparse makes CPU layers (2:4 on GPU: to_semi_structured)"
    if layer.weight.dtype not in FLOAT_TYPES:
        return f"its weight is {layer.weight.dtype}; the CPU sparse kernels take float32 or float64"
    return None


def _not_sparse_enough(sparsity: float, min_sparsity: float) -> str | None:
    return f"sparsity {sparsity:.1%} < min_sparsity {min_sparsity:.1%}" if sparsity < min_sparsity else None


def _nothing_to_convert(decisions: list[LayerDecision], min_sparsity: float) -> str:
    lines = [decision.line() for decision in decisions]
    if not lines:
        return "to_sparse: the model has no Linear or convolution layer to convert"
    return (
        f"to_sparse: no layer can be converted (min_sparsity {min_sparsity:.1%}); prune the model first "
        "(Pruner.finalize() makes the zeros permanent) or lower min_sparsity. Layers: " + "; ".join(lines)
    )


def _sparse_layer(layer: nn.Module, kernel: Kernel) -> SparseLayer:
    if isinstance(layer, nn.Linear):
        return SparseLinear.from_dense(layer, kernel)
    return SparseConv.from_dense(layer, kernel)  # type: ignore[arg-type]


def _decide(
    name: str,
    layer: nn.Module,
    inputs: Tensor,
    families: tuple[str, ...],
    min_speedup: float,
    timing: dict[str, int | None],
) -> tuple[LayerDecision, SparseLayer | None]:
    """Check and time every candidate kernel against the dense layer on its recorded input; keep the fastest if it pays."""
    sparsity = weight_sparsity(layer.weight)
    with torch.no_grad():
        reference = layer(inputs)
    matrix = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    columns = reference.numel() // reference.shape[-1 if isinstance(layer, nn.Linear) else 1]
    built: dict[str, SparseLayer] = {}
    failed: list[str] = []
    kernels = candidates(matrix, columns, families)
    if not kernels:
        reason = (
            f"none of the kernels asked for ({', '.join(families)}) fits it at this input: mv takes one row, bsr a "
            "block-sparse weight, csr-split a dense operand over 192 KiB"
        )
        return LayerDecision(name, type(layer).__name__, sparsity, None, reason), None
    for kernel in kernels:
        try:
            candidate = _sparse_layer(layer, kernel)
            with torch.no_grad():
                output = candidate(inputs)
        except RuntimeError as error:  # a layout the back-end refuses for this matrix
            failed.append(f"{kernel.name} failed ({str(error).splitlines()[0]})")
            continue
        atol = ATOL * max(1.0, float(reference.abs().max()))
        if not torch.allclose(output, reference, rtol=RTOL, atol=atol):
            failed.append(f"{kernel.name} differs from dense by {float((output - reference).abs().max()):.1e}")
            continue
        built[kernel.name] = candidate
    layer_type = type(layer).__name__
    if not built:
        return LayerDecision(name, layer_type, sparsity, None, "no kernel works: " + "; ".join(failed)), None
    reports = compare_latency({"dense": layer, **built}, inputs, **timing)
    timings = {kernel: report.median_ms for kernel, report in reports.items()}
    best = min(built, key=lambda kernel: timings[kernel])
    speedup = timings["dense"] / timings[best]
    if speedup < min_speedup:
        reason = f"measured {speedup:.2f}x with {best} (fastest of {len(built)} kernels) < min_speedup {min_speedup:.2f}x"
        return LayerDecision(name, layer_type, sparsity, None, reason, speedup, timings), None
    reason = f"measured {speedup:.2f}x over dense (fastest of {len(built)} kernels)"
    replacement = built[best].train(layer.training)
    return LayerDecision(name, layer_type, sparsity, best, reason, speedup, timings), replacement
