"""Pruning a model sharded by FSDP2 (``torch.distributed.fsdp.fully_shard``): masks on shards, stages that run there.

The Pruner asks ``mask_set_for`` for its MaskSet and ``adapt_stages`` for its stages. For a model
whose parameters in scope are FSDP2 DTensors they give the sharded versions (``ShardedMaskSet``,
``ShardedMaskUpdate``) and refuse, by name and with the alternative, what cannot run on shards; for
any other model they return what they were given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, Shard

from pruneaware.core.context import Context
from pruneaware.core.stage import Stage
from pruneaware.distributed.fsdp_masks import ShardedMaskSet
from pruneaware.core.errors import ConfigError
from pruneaware.core.masks import MaskSet
from pruneaware.core.scope import Scope
from pruneaware.stages import ChannelRegularization, ChannelRemoval, MaskUpdate, Regrowth, Regularization, Rewinding, Splicing
from pruneaware.stages.sharded_prune import ShardedMaskUpdate

UNSHARDED_ONLY = {
    ChannelRemoval: "prune channels on the unsharded model (or under DDP), save it, then fully_shard the smaller model",
    ChannelRegularization: "regularize and remove channels on the unsharded model (or under DDP), then fully_shard it",
    Regularization: "a schedule alone (magnitude pruning) under fully_shard, or regularize under DDP",
    Regrowth: "a gradual schedule without regrowth under fully_shard, or RigL/SET under DDP",
    Splicing: "a gradual schedule without splicing under fully_shard, or splicing under DDP",
    Rewinding: "a schedule without rewinding under fully_shard, or rewinding under DDP",
}


def is_fsdp1(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(module, FullyShardedDataParallel)


def is_sharded(params: Mapping[str, nn.Parameter], model: nn.Module) -> bool:
    """Whether the parameters in scope are FSDP2 shards; FSDP1, FSDP1 mixed with FSDP2, and partly sharded scopes are refused."""
    fsdp1 = any(is_fsdp1(module) for module in model.modules())
    sharded = [name for name, param in params.items() if isinstance(param, DTensor)]
    if fsdp1:
        mixed = " mixed with fully_shard (FSDP2)" if sharded or any(isinstance(p, DTensor) for p in model.parameters()) else ""
        raise ConfigError(
            "model", f"FullyShardedDataParallel (FSDP1){mixed}",
            "a model sharded by torch.distributed.fsdp.fully_shard (FSDP2) alone, per block and at the root; FSDP1 flattens parameters, so their masks cannot be kept",
        )
    if not sharded:
        return False
    plain = sorted(set(params) - set(sharded))
    if plain:
        raise ConfigError("model", f"parameters in scope not sharded: {plain[:3]}", "fully_shard applied at the root as well as per block, so every parameter in scope is sharded")
    for name in sharded:
        param = params[name]
        if param.device_mesh.ndim != 1 or tuple(param.placements) != (Shard(0),):
            raise ConfigError(
                "model", f"{name!r} placed as {param.placements} on a {param.device_mesh.ndim}-D mesh",
                "fully_shard's default layout (Shard(0) on a 1-D mesh); HSDP meshes and custom shard_placement_fn are not supported",
            )
    return True


def mask_set_for(scope: Scope, model: nn.Module, *, keep_zeros: bool) -> MaskSet:
    """The MaskSet of the parameters ``scope`` selects: a ShardedMaskSet for FSDP2 parameters, the dense MaskSet otherwise.

    FSDP2 modules are resharded first: after a forward pass the root holds unsharded copies, and the
    optimizer steps the sharded parameters.
    """
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    params = scope.select(model)
    return ShardedMaskSet(params, keep_zeros=keep_zeros) if is_sharded(params, model) else MaskSet(params, keep_zeros=keep_zeros)


def adapt_stages(stages: Sequence[Stage], ctx: Context) -> list[Stage]:
    """The stages as they run on shards (for a sharded MaskSet); stages that cannot are refused, naming the alternative."""
    if not isinstance(ctx.masks, ShardedMaskSet):
        return list(stages)
    adapted: list[Stage] = []
    for stage in stages:
        for kind, alternative in UNSHARDED_ONLY.items():
            if isinstance(stage, kind):
                raise ConfigError(f"stages.{stage.name}", "under fully_shard (FSDP2)", alternative)
        adapted.append(ShardedMaskUpdate(stage, ctx) if type(stage) is MaskUpdate else stage)
    return adapted
