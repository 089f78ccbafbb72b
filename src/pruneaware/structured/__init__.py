"""Structured pruning during training: channels removed for real, optimizer state kept consistent.

Torch-Pruning's dependency graph finds which channels are coupled (residual adds, concatenations,
depthwise and grouped convolutions, norms); this package decides when and which to remove inside
training and keeps every reference to the replaced parameters (optimizer state, masks) valid.
"""

from pruneaware.structured.convert import convert_for_pruning
from pruneaware.structured.graph import build_dependency_graph, unwrap_model
from pruneaware.structured.mha import PrunableMultiheadAttention
from pruneaware.structured.surgery import ParameterRemap, prune_group_tracked, remap_optimizer

__all__ = [
    "ParameterRemap",
    "PrunableMultiheadAttention",
    "build_dependency_graph",
    "convert_for_pruning",
    "prune_group_tracked",
    "remap_optimizer",
    "unwrap_model",
]
