"""Mask updates on parameters sharded by FSDP2: scores, cuts and masks stay on each rank's shards.

Element-wise criteria (magnitude, random, Taylor, movement, Fisher) score each shard where it
lives. An element granularity agrees on its cut by a distributed selection (``fsdp_select``),
exactly the cut the unsharded run would make; N:M groups run along the input dimension, which
FSDP2 never splits (it shards dim 0), so each shard is cut alone. Nothing is broadcast from rank 0:
every rank computes its own part of one agreed result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor

from pruneaware.core.context import Context
from pruneaware.criteria import Criterion
from pruneaware.distributed.fsdp_masks import local
from pruneaware.distributed.fsdp_select import sharded_element_masks
from pruneaware.distributed.world import collective_device
from pruneaware.core.errors import ConfigError, StateError
from pruneaware.granularity import NM, Element, Granularity
from pruneaware.stages.prune import MaskUpdate


class ShardedElement(Granularity):
    """``Element`` on local shards: the same cut per layer, by Erdős–Rényi(-Kernel) share or globally, agreed across ranks."""

    def __init__(self, element: Element, global_shapes: Mapping[str, torch.Size]):
        self.element, self.global_shapes = element, dict(global_shapes)

    def masks(self, scores: Mapping[str, Tensor], sparsity: float) -> dict[str, Tensor]:
        if self.element.scope == "global":
            return sharded_element_masks(scores, self.global_shapes, sparsity)
        shapes = {name: torch.empty(self.global_shapes[name], device="meta") for name in scores}
        return sharded_element_masks(scores, self.global_shapes, self.element._layer_sparsities(shapes, sparsity))


def refuse_unsharded_features(criterion: Criterion, granularity: Granularity, section: str) -> None:
    """Criteria that probe the whole model and granularities whose units cross shard boundaries are refused, naming the alternative."""
    name = type(criterion).__name__.lower()
    if type(criterion).calibrate is not Criterion.calibrate or criterion.rounds != 1:
        raise ConfigError(
            f"{section}.criterion", name,
            "an element-wise criterion under fully_shard (magnitude, random, taylor, movement, fisher): this one probes the "
            "whole model with calibration batches; prune one-shot on the unsharded model first, then fully_shard it",
        )
    if not isinstance(granularity, (Element, NM)):
        raise ConfigError(
            f"{section}.granularity", type(granularity).__name__.lower(),
            "element or N:M granularity under fully_shard: blocks span the row boundaries between shards; "
            "prune blocks on the unsharded model (or under DDP), then fully_shard it",
        )


def local_rows(score: Tensor, param: Tensor) -> Tensor:
    """This rank's rows of a full-size score (``random`` draws the whole tensor, identically on every rank)."""
    if isinstance(score, DTensor) or score.shape != param.shape:
        return local(score)
    rows = local(param).shape[0]
    offset = dist.get_rank() * math.ceil(param.shape[0] / dist.get_world_size())
    return score.narrow(0, min(offset, score.shape[0]), rows) if rows else score[:0]


class ShardedMaskUpdate(MaskUpdate):
    """MaskUpdate whose scores and masks are local shards; keeps the name ``prune`` (checkpoints match the unsharded stage)."""

    def __init__(self, stage: MaskUpdate, ctx: Context):
        refuse_unsharded_features(stage.criterion, stage.granularity, stage.section)
        granularity = stage.granularity
        if isinstance(granularity, Element):
            granularity = ShardedElement(granularity, {name: param.shape for name, param in ctx.params.items()})
        super().__init__(stage.schedule, stage.criterion, granularity, stage.rule, stage.section)

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        for name, param in ctx.params.items():
            if isinstance(self.granularity, NM) and param.dim() < 2:
                raise ConfigError(f"{self.section}.granularity", "n:m", f"a matrix or convolution weight; {name!r} is 1-D")

    def _prune_to(self, ctx: Context, target: float) -> None:
        with torch.no_grad():
            scores = {name: local_rows(self.criterion.score(name, param), param).float() for name, param in ctx.params.items()}
        check_finite_everywhere(ctx, scores)
        ctx.masks.update(self.rule(self.granularity, scores, ctx.masks.masks, target))


def check_finite_everywhere(ctx: Context, scores: Mapping[str, Tensor]) -> None:
    """The unsharded check (non-finite weights or NaN scores stop the run, naming the layer) on every rank at once."""
    flags = torch.tensor(
        [[int(not bool(torch.isfinite(local(ctx.params[name])).all())), int(bool(torch.isnan(score).any()))] for name, score in scores.items()],
        dtype=torch.int64,
        device=collective_device(),
    ).reshape(-1, 2)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    for (name, _), (weights, nan) in zip(scores.items(), flags.tolist()):
        if weights or nan:
            raise StateError(
                f"layer {name!r} has non-finite (NaN or infinite) {'weights' if weights else 'scores'} at the mask update of step {ctx.step} "
                "(on some rank's shard): training diverged; lower the learning rate or check the loss and inputs, then resume from an earlier checkpoint"
            )
