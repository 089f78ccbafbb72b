"""Measurements of a model: parameters, MACs, stored size and latency (``model``), and sparsity counted from the weights (``sparsity``)."""

from pruneaware.measure.model import (
    WEIGHTED_LAYERS,
    LatencyReport,
    MacCount,
    SizeReport,
    compare_latency,
    count_macs,
    count_nonzero_parameters,
    count_parameters,
    measure_latency,
    state_dict_size_bytes,
)
from pruneaware.measure.sparsity import LayerSparsity, Summary, summarize

__all__ = [
    "WEIGHTED_LAYERS",
    "LatencyReport",
    "LayerSparsity",
    "MacCount",
    "SizeReport",
    "Summary",
    "compare_latency",
    "count_macs",
    "count_nonzero_parameters",
    "count_parameters",
    "measure_latency",
    "state_dict_size_bytes",
    "summarize",
]
