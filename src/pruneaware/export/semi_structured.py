"""2:4 semi-structured conversion of Linear weights for NVIDIA GPUs, after checking every group of four is 2:4.

A layer is converted only when each group of 4 consecutive input weights holds at most 2
nonzeros (the pattern ``NM(2, 4)`` masks produce) and its weight is on a CUDA GPU that runs
2:4 kernels; ``torch.sparse.to_sparse_semi_structured`` then compresses it, and the result must
reproduce the masked weight exactly. Anywhere else the layer stays dense and the report says why.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from pruneaware.core.errors import UsageError
from pruneaware.export.conversion import ConversionReport, LayerDecision, weight_sparsity
from pruneaware.measure import WEIGHTED_LAYERS
from pruneaware.structured.graph import unwrap_model

GROUP = 4
KEEP = 2
MIN_CAPABILITY = (8, 0)
CPU_FALLBACK = (
    "2:4 semi-structured kernels run only on CUDA GPUs of compute capability 8.0 or newer; "
    "the dense masked layer is kept"
)


def to_semi_structured(model: nn.Module, *, inplace: bool = False) -> ConversionReport:
    """Compress the 2:4-masked Linear weights of ``model`` (a copy unless ``inplace``) for GPU 2:4 kernels.

    The layers stay ``nn.Linear``; their weight becomes a frozen ``SparseSemiStructuredTensor``.
    On a CPU model every 2:4 layer is kept dense with a warning. Raises ``UsageError`` when no
    Linear layer has a 2:4 mask at all.
    """
    model = unwrap_model(model)
    if not inplace:
        model = copy.deepcopy(model)
    decisions: list[LayerDecision] = []
    patterned: list[str] = []  # layers whose mask is 2:4
    fallback: list[str] = []  # 2:4 layers kept dense for want of a suitable GPU
    for name, layer in model.named_modules():
        if not isinstance(layer, WEIGHTED_LAYERS):
            continue
        layer_type = type(layer).__name__
        sparsity = weight_sparsity(layer.weight)
        reason = _not_2_4(layer)
        if reason is None:
            patterned.append(name)
            reason = _device_problem(layer.weight)
            if reason is not None:
                fallback.append(name)
            else:
                reason = _convert(layer)
        if reason is None:
            kernel = f"2:4 ({layer.weight.BACKEND})"
            decisions.append(LayerDecision(name, layer_type, sparsity, kernel, "every group of 4 is 2:4"))
        else:
            decisions.append(LayerDecision(name, layer_type, sparsity, None, reason))
    if not patterned:
        lines = "; ".join(decision.line() for decision in decisions) or "the model has no Linear layer"
        raise UsageError(f"to_semi_structured: no Linear layer has a 2:4 mask. Layers: {lines}")
    report = ConversionReport(model, tuple(decisions))
    if fallback and not report.converted:
        warnings.warn(
            f"to_semi_structured converted nothing: {len(fallback)} 2:4 layer(s) kept dense "
            f"({', '.join(fallback)}): {CPU_FALLBACK}",
            UserWarning,
            stacklevel=2,
        )
    return report


def _not_2_4(layer: nn.Module) -> str | None:
    """Why ``layer`` is not a 2:4-masked Linear, or None: every group of 4 input weights has at most 2 nonzeros."""
    if not isinstance(layer, nn.Linear):
        return f"{type(layer).__name__} is not supported (2:4 conversion takes Linear layers)"
    weight = layer.weight.detach()
    if weight.shape[1] % GROUP:
        return f"in_features {weight.shape[1]} is not a multiple of {GROUP}, so its weights do not form 2:4 groups"
    counts = (weight != 0).reshape(weight.shape[0], -1, GROUP).sum(dim=-1)
    bad = (counts > KEEP).nonzero()
    if len(bad) == 0:
        return None
    row, group = (int(index) for index in bad[0])
    return (
        f"its mask is not 2:4: {len(bad)} of {counts.numel()} groups of {GROUP} input weights hold more than "
        f"{KEEP} nonzeros (first: row {row}, inputs {group * GROUP}-{group * GROUP + GROUP - 1}); "
        "prune it with granularity '2:4'"
    )


def _device_problem(weight: Tensor) -> str | None:
    """Why the 2:4 kernels cannot run where ``weight`` is, or None."""
    if weight.device.type != "cuda":
        return f"its weight is on {weight.device}: {CPU_FALLBACK}"
    capability = torch.cuda.get_device_capability(weight.device)
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(weight.device)
        return f"{name} has compute capability {capability[0]}.{capability[1]}: {CPU_FALLBACK}"
    return None


def _convert(layer: nn.Linear) -> str | None:
    """Replace the layer's weight by its 2:4 compression, or say why torch refused (the layer is left as it was)."""
    weight = layer.weight.detach()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*SparseSemiStructuredTensor is in prototype stage")
            compressed = torch.sparse.to_sparse_semi_structured(weight)
    except (RuntimeError, ValueError, NotImplementedError) as error:
        return f"torch refused the conversion: {str(error).splitlines()[0]}"
    if not torch.equal(compressed.to_dense(), weight):
        return "the compressed weight differs from the masked one"
    layer.weight = nn.Parameter(compressed, requires_grad=False)
    return None
