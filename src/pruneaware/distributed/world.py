"""Where this process stands in a data-parallel run: its rank, the number of ranks, and its share of a batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


def collective_device(group: object = None) -> torch.device:
    """Where tensors handed to a collective of ``group`` must live: the current CUDA device under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")


@dataclass(frozen=True)
class World:
    """Rank and size of the default process group (rank 0 of 1 outside one), with the few collectives a run needs."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> World:
        """The default process group as it stands now: rank 0 of 1 when none is initialized."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, evaluates, measures and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, batch: Tensor) -> Tensor:
        """This rank's share of a global batch of sample indices: every ``size``-th one from ``rank``, as torch's DistributedSampler deals them.

        The global batch stays what it is at any world size, so the number of optimizer steps, the
        schedules and the sequence of global batches do not depend on how many processes share them.
        """
        return batch[self.rank :: self.size]

    def mean_loss_share(self, summed_loss: Tensor, global_count: int) -> Tensor:
        """This rank's summed loss, scaled so that DDP's average of the ranks' gradients is the gradient of the global batch's mean loss.

        Shards of one batch may differ in size by one; averaging per-rank means would weigh their samples unequally.
        """
        return summed_loss * (self.size / global_count)

    def sum(self, value: float) -> float:
        """``value`` summed over all ranks (itself outside a process group)."""
        if not self.distributed:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=collective_device())
        dist.all_reduce(total)
        return float(total)

    def barrier(self) -> None:
        """Wait until every rank gets here (nothing to wait for outside a process group)."""
        if self.distributed:
            dist.barrier()
