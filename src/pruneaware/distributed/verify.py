"""Bit-exact comparison of tensors across ranks: one SHA-256 per tensor, gathered once."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from pruneaware.core.errors import StateError


def digest(tensor: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes: equal digests mean bit-identical tensors."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    header = f"{tensor.dtype}{tuple(tensor.shape)}".encode()
    return hashlib.sha256(header + data).hexdigest()


def digests(tensors: Mapping[str, Tensor]) -> dict[str, str]:
    """The digest of every named tensor."""
    return {name: digest(tensor) for name, tensor in tensors.items()}


def assert_identical_across_ranks(tensors: Mapping[str, Tensor], what: str, group: Any = None) -> None:
    """Raise StateError naming the first tensor whose bits differ between ranks (one all-gather of digests).

    A debugging check: it costs a copy to CPU and a hash of every tensor, so call it at pruning
    steps, not every training step.
    """
    local = digests(tensors)
    gathered: list[dict[str, str] | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, local, group=group)
    for rank, other in enumerate(gathered):
        if other.keys() != local.keys():
            raise StateError(f"{what} differ between ranks: rank {rank} has {sorted(other)}, rank {dist.get_rank(group)} has {sorted(local)}")
        for name in local:
            if other[name] != local[name]:
                raise StateError(
                    f"{what} differ between ranks: {name!r} on rank {rank} is not bit-identical to rank {dist.get_rank(group)}'s; "
                    "is the model wrapped in DistributedDataParallel (and the wrapper the pruner rebuilt after channel removal used)?"
                )

