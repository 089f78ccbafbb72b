"""Export of pruned models: pickle-free save/load of slimmed models, and ONNX export."""

from pruneaware.export.onnx import OnnxReport, export_onnx
from pruneaware.export.saving import load, read_spec, save

__all__ = ["OnnxReport", "export_onnx", "load", "read_spec", "save"]
