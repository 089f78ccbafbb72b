"""Start N local processes joined in one gloo process group and run a function on each (what ``--nproc`` does)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pruneaware.distributed.timeouts import peers_answer_within, resolve_timeout
from pruneaware.core.errors import ConfigError, PruneawareError

GRACE_SECONDS = 5.0
"""After one process fails, how long the others get to exit before SIGTERM, and after it before SIGKILL (a stopped process ignores SIGTERM)."""


class WorkerFailed(PruneawareError, RuntimeError):
    """A process of a distributed run failed; its own error was printed above."""


def launch(
    fn: Callable[..., Any],
    nproc: int,
    args: Sequence[Any] = (),
    *,
    start_method: str = "spawn",
    threads: int | None = None,
    timeout: timedelta | float | None = None,
) -> None:
    """Run ``fn(*args)`` on ``nproc`` processes of one gloo process group on this machine; returns when all are done.

    Each process gets ``threads`` intra-op threads (default: this process's share of them). If
    one fails the others are stopped and WorkerFailed is raised. ``timeout`` (seconds or a
    timedelta; default ``$PRUNEAWARE_DDP_TIMEOUT`` or 600 s) bounds every wait for a peer: a peer
    that stops answering fails the run that long after. ``start_method='fork'`` starts faster but
    is safe only in a process that has not run multi-threaded torch work yet.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError("nproc", nproc, "a whole number of processes >= 1")
    timeout = resolve_timeout(timeout)
    threads = threads or max(1, torch.get_num_threads() // nproc)
    address = f"tcp://127.0.0.1:{free_port()}"
    try:
        context = mp.start_processes(
            _child, args=(fn, tuple(args), nproc, address, threads, timeout), nprocs=nproc, start_method=start_method, join=False
        )
        while not context.join(grace_period=GRACE_SECONDS):
            pass
    except mp.ProcessExitedException as error:
        raise WorkerFailed(f"process {error.error_index} of {nproc} exited with status {error.exit_code}") from None
    except mp.ProcessRaisedException as error:
        raise WorkerFailed(f"a process of {nproc} failed:\n{error}") from None


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it), for the process group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _child(rank: int, fn: Callable[..., Any], args: tuple[Any, ...], nproc: int, address: str, threads: int, timeout: timedelta) -> None:
    """One process: join the group, run ``fn``, leave; a pruneaware error prints one line and exits with status 2."""
    torch.set_num_threads(threads)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc))
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=nproc, timeout=timeout)
    try:
        with peers_answer_within(timeout, rank):
            fn(*args)
    except PruneawareError as error:
        print(f"error (rank {rank}): {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        dist.destroy_process_group()
