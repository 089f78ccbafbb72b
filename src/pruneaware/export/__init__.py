"""Export of pruned models: pickle-free save/load of slimmed models, ONNX export, sparse-kernel inference layers."""

from pruneaware.export.conversion import ConversionReport, LayerDecision
from pruneaware.export.onnx import OnnxReport, export_onnx
from pruneaware.export.saving import load, read_spec, save
from pruneaware.export.semi_structured import to_semi_structured
from pruneaware.export.sparse import to_sparse
from pruneaware.export.sparse_layers import SparseConv, SparseLinear

__all__ = [
    "ConversionReport",
    "LayerDecision",
    "OnnxReport",
    "SparseConv",
    "SparseLinear",
    "export_onnx",
    "load",
    "read_spec",
    "save",
    "to_semi_structured",
    "to_sparse",
]
