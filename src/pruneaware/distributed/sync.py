"""One set of pruning decisions for all ranks: masks and channel choices are rank 0's, broadcast at pruning steps.

Why broadcast decisions instead of relying on every rank scoring alike: gradient-based criteria
(Taylor, movement, Fisher) read gradients after DDP has averaged them and do score alike, but
probing criteria (SNIP, GraSP) score each rank's own calibration batches, ``random`` draws from a
generator each rank may seed differently, a user's criterion may read anything, and float scores
can tie differently on different hardware. Adopting rank 0's decisions holds for all of them at
the cost of one broadcast of one byte per masked weight per pruning step, never per training step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from pruneaware.distributed.teardown import release_at_exit
from pruneaware.distributed.verify import assert_identical_across_ranks
from pruneaware.distributed.world import World, collective_device
from pruneaware.core.errors import ConfigError

T = TypeVar("T")
SOURCE_RANK = 0


class RankZeroSync:
    """Makes every rank of ``group`` (default: the default process group) adopt rank 0's pruning decisions.

    With ``verify=True`` each mask update also checks, by hashing, that the pruned parameters and
    the new masks are bit-identical on every rank, raising StateError naming the first that is not
    (it catches a model that is not wrapped in DDP, or a stale wrapper); a debugging aid that costs
    a hash of every pruned parameter at each pruning step.
    """

    def __init__(self, group: Any = None, *, verify: bool = False):
        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("sync", "RankZeroSync()", "a sync built after torch.distributed.init_process_group(...), or sync=None")
        self.group = group
        self.verify = verify

    def masks(self, masks: Mapping[str, Tensor], params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rank 0's ``masks`` on every rank: all flattened into one byte tensor, one broadcast."""
        names = list(masks)
        local = [masks[name] for name in names]
        if local:
            flat = torch.cat([mask.reshape(-1).to(torch.uint8) for mask in local]).to(collective_device(self.group))
            dist.broadcast(flat, src=self._source(), group=self.group)
            pieces = flat.split([mask.numel() for mask in local])
            agreed = {name: piece.reshape(mask.shape).to(mask.device, torch.bool) for name, piece, mask in zip(names, pieces, local)}
        else:
            agreed = {}
        if self.verify:
            assert_identical_across_ranks({**{f"mask {n}": m for n, m in agreed.items()}, **params}, "pruned parameters or masks", self.group)
        return agreed

    def choice(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object, e.g. the channel groups to remove) on every rank."""
        holder = [value]
        dist.broadcast_object_list(holder, src=self._source(), group=self.group)
        return holder[0]

    def _source(self) -> int:
        """Rank 0 of ``group``, as a global rank (what the collectives take)."""
        return SOURCE_RANK if self.group is None else dist.get_global_rank(self.group, SOURCE_RANK)


def resolve_sync(sync: RankZeroSync | str | None) -> RankZeroSync | None:
    """``"auto"``: a RankZeroSync when a process group of more than one rank is initialized, else None; anything else as given.

    With a process group initialized, it is also set to be destroyed at exit (``release_at_exit``), whatever ``sync`` is.
    """
    if dist.is_available() and dist.is_initialized():
        release_at_exit()
    if sync == "auto":
        return RankZeroSync() if World.current().distributed else None
    if sync is None or isinstance(sync, RankZeroSync):
        return sync
    raise ConfigError("sync", sync, "'auto', None, or pruneaware.distributed.RankZeroSync(...)")
