"""Data-parallel training with pruning: identical masks and channel removals on every rank, one checkpoint writer.

The Pruner needs nothing from this package to be correct under DistributedDataParallel: when a
process group of more than one rank is initialized it adopts rank 0's masks and channel choices
at every pruning step (``RankZeroSync``), and after channel removal it rebuilds a DDP wrapper it
was given (``rewrap_ddp``; forward through ``pruner.model``). What is here is for the training
loop around it: ``World`` (rank, shard of a global batch), ``save_on_main`` (rank 0 writes, the
others wait), ``assert_identical_across_ranks`` (a bit-exact check), and ``launch`` (N local gloo
processes, what ``pruneaware run --nproc N`` uses).
"""

from pruneaware.distributed.checkpoint import save_on_main
from pruneaware.distributed.ddp import rewrap_ddp
from pruneaware.distributed.launch import WorkerFailed, free_port, launch
from pruneaware.distributed.sync import RankZeroSync, resolve_sync
from pruneaware.distributed.verify import assert_identical_across_ranks, digest, digests
from pruneaware.distributed.world import World

__all__ = [
    "RankZeroSync",
    "WorkerFailed",
    "World",
    "assert_identical_across_ranks",
    "digest",
    "digests",
    "free_port",
    "launch",
    "resolve_sync",
    "rewrap_ddp",
    "save_on_main",
]
