"""Rebuilding a DistributedDataParallel wrapper after channel removal replaced the parameters it reduces."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pruneaware.core.errors import UsageError


def rewrap_ddp(old: DistributedDataParallel) -> DistributedDataParallel:
    """A new wrapper around ``old.module`` with ``old``'s settings; ``old`` refuses any further forward pass.

    DDP registers its gradient hooks and buckets on the parameters it was built with. Channel
    removal replaces those parameters, so the old wrapper would stop averaging gradients (ranks
    would drift apart) or fail waiting for gradients that never come. Building the new wrapper is
    a collective (it broadcasts rank 0's parameters and buffers): every rank must call it together.
    Communication hooks registered on ``old`` are not carried over.
    """
    new = DistributedDataParallel(old.module, **_settings(old))
    old.register_forward_pre_hook(_refuse_stale_wrapper)
    return new


def _settings(ddp: DistributedDataParallel) -> dict[str, Any]:
    """The constructor arguments ``ddp`` was built with, as far as DDP keeps them (its signature varies across torch versions)."""
    accepted = inspect.signature(DistributedDataParallel.__init__).parameters
    settings: dict[str, Any] = {
        "device_ids": ddp.device_ids,
        "output_device": ddp.output_device,
        "dim": ddp.dim,
        "process_group": ddp.process_group,
        "find_unused_parameters": ddp.find_unused_parameters,
        "gradient_as_bucket_view": ddp.gradient_as_bucket_view,
        "static_graph": ddp.static_graph,
    }
    if not getattr(ddp, "bucket_bytes_cap_default", False):
        settings["bucket_cap_mb"] = ddp.bucket_bytes_cap / 2**20
    if "mixed_precision" in accepted:
        settings["mixed_precision"] = getattr(ddp, "mixed_precision", None)
    if "forward_sync_buffers" in accepted and hasattr(ddp, "forward_sync_buffers"):
        settings["forward_sync_buffers"] = ddp.forward_sync_buffers
    else:
        settings["broadcast_buffers"] = ddp.broadcast_buffers
    return settings


def _refuse_stale_wrapper(module: nn.Module, args: Any) -> None:
    raise UsageError(
        "this DistributedDataParallel wrapper is stale: channel removal replaced the parameters it averages, and the "
        "pruner built a new wrapper; forward through pruner.model (or take it in pruner.on_structure_change)"
    )
