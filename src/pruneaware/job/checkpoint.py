"""Checkpoints that survive a kill: written to a temp file and renamed, with every RNG state inside."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from pruneaware.errors import StateError


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise StateError(f"cannot read checkpoint {str(path)!r}: {error}") from None


def rng_state() -> torch.Tensor:
    """Torch's global generator (dropout and random init draw from it; data order has its own)."""
    return torch.get_rng_state()


def restore_rng_state(state: torch.Tensor) -> None:
    torch.set_rng_state(state)
