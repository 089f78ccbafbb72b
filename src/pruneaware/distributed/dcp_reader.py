"""A DCP reader whose ``.metadata`` pickle may name only checkpoint-metadata types, so loading a folder runs no code.

``torch.distributed.checkpoint.FileSystemReader`` reads ``.metadata`` with plain ``pickle.load``: a
hostile file could call any function. This reader unpickles it first with an allowlist (DCP's own
metadata classes, torch dtypes, sizes and layouts, paths) and refuses anything else as a StateError.
"""

from __future__ import annotations

import dataclasses
import enum
import pickle
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader

from pruneaware.core.errors import StateError

METADATA_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
ALLOWED = {("torch", "Size"), ("torch", "device"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict")}
PATH_TYPES = ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path")


class _MetadataUnpickler(pickle.Unpickler):
    """Resolves DCP's metadata dataclasses and enums, torch dtypes and the few torch and path types metadata holds."""

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name) if self._allowed(module, name) else None
        if module == "torch" and isinstance(found, torch.dtype):
            return found
        if module in METADATA_MODULES and isinstance(found, type) and (dataclasses.is_dataclass(found) or issubclass(found, enum.Enum)):
            return found
        if (module, name) in ALLOWED or (module == "pathlib" and name in PATH_TYPES):
            return found
        raise pickle.UnpicklingError(f"{module}.{name} is not a checkpoint-metadata type")

    @staticmethod
    def _allowed(module: str, name: str) -> bool:
        return module in (*METADATA_MODULES, "torch", "torch.serialization", "collections", "pathlib") and not name.startswith("__")


def check_metadata(path: str | Path) -> None:
    """Unpickle ``path`` (a DCP ``.metadata`` file) with the allowlist; a StateError naming the file if it holds anything else."""
    try:
        with open(path, "rb") as stream:
            _MetadataUnpickler(stream).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as error:
        raise StateError(
            f"refusing to read checkpoint metadata {str(path)!r}: {error}; only a folder written by "
            "torch.distributed.checkpoint (pruneaware's save_sharded) can be loaded"
        ) from None


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` that checks ``.metadata`` with the allowlist before torch unpickles it."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        check_metadata(Path(self.path) / ".metadata")
        return super().read_metadata(*args, **kwargs)
