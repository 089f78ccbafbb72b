"""Checkpoints that survive a kill: written to a temp file and renamed, with every RNG state inside."""

from __future__ import annotations

import os
import pickle
import secrets
from pathlib import Path
from typing import Any

import torch

from pruneaware.core.errors import StateError

TEMP_SUFFIX = ".tmp"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename: a reader never sees half a file.

    The file is created with mode 0666 less the user's umask, as ``open`` and ``pa.save`` create files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_name = path.parent / f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    handle = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
        _fsync_directory(path.parent)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the half-written temporaries a killed writer left in a run folder and its phase folders; returns them."""
    directory = Path(directory)
    stale = [*directory.glob(f".*.pt.*{TEMP_SUFFIX}"), *directory.glob(f"*/.*.pt.*{TEMP_SUFFIX}")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, so a power loss cannot bring back the old file."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by ``atomic_save`` (tensors and plain containers only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise StateError(f"cannot read checkpoint {str(path)!r}: {str(error).splitlines()[0]}; delete it to train this phase again from its start") from None
    if not isinstance(state, dict):
        raise StateError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a training state; delete it to train this phase again from its start")
    return state


def rng_state() -> torch.Tensor:
    """Torch's global generator (dropout and random init draw from it; data order has its own)."""
    return torch.get_rng_state()


def restore_rng_state(state: torch.Tensor) -> None:
    torch.set_rng_state(state)
