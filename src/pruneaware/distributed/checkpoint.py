"""Checkpoints in a data-parallel run: one writer (rank 0), everyone else waits until the file is complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pruneaware.distributed.world import World
from pruneaware.job import checkpoint


def save_on_main(obj: Any, path: str | Path, world: World | None = None) -> None:
    """Rank 0 writes ``obj`` atomically (temp file, fsync, rename); every rank returns once the file is complete.

    Every rank holds the same model, masks and optimizer state, so one copy is the checkpoint; the
    barrier means no rank goes on (and possibly reads or replaces the file) before it is whole.
    """
    world = world or World.current()
    if world.is_main:
        checkpoint.atomic_save(obj, path)
    world.barrier()
