"""Leaving a process group before the interpreter shuts down, so a completed run exits with status 0.

Why: since torch 2.14 every backward pass stashes a Python object (the ``contextvars`` context) in
thread-local state, and each collective DDP launches from a backward hook keeps a copy of that
state. Gloo's worker threads drop their reference to a finished collective after the caller has
moved on; if the interpreter is already finalizing when a worker drops the last one, the worker
cannot take the GIL, Python ends the thread by unwinding it through a destructor that may not
throw, and the process aborts (``terminate called without an active exception``, SIGABRT). A
Pruner makes this likely: it holds the DDP wrapper in reference cycles, so the wrapper and its
last collectives live until the garbage collection that runs during finalization.
"""

from __future__ import annotations

import atexit
import gc

import torch.distributed as dist

_registered = False


def release_at_exit() -> None:
    """Destroy the default process group (if still there) when the interpreter exits, before it finalizes.

    Idempotent. ``atexit`` handlers run while threads can still take the GIL: unreachable DDP
    wrappers are collected then, and destroying the group shuts its worker threads down.
    """
    global _registered
    if not _registered:
        atexit.register(_release)
        _registered = True


def _release() -> None:
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
