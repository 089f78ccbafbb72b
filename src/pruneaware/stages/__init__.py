"""Stages: each behaviour of a pruning run as one small object the Pruner drives (see pruneaware.core.stage)."""

from pruneaware.stages.channels import ChannelRegularization, ChannelRemoval
from pruneaware.stages.depth import DepthPruning
from pruneaware.stages.distill import Distillation
from pruneaware.stages.gqa import GQAWidth
from pruneaware.stages.latency_allocation import LatencyAllocation
from pruneaware.stages.latency_penalty import LatencyPenalty
from pruneaware.stages.prune import MaskUpdate, follow
from pruneaware.stages.regrow import Regrowth
from pruneaware.stages.regularize import Regularization
from pruneaware.stages.rewind import Rewinding
from pruneaware.stages.splice import Splicing

__all__ = ["ChannelRegularization", "ChannelRemoval", "DepthPruning", "Distillation", "GQAWidth", "LatencyAllocation", "LatencyPenalty", "MaskUpdate", "Regrowth", "Regularization", "Rewinding", "Splicing", "follow"]
