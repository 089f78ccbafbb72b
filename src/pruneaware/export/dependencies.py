"""Optional packages of the export features, imported on first use with an install hint when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from pruneaware.core.errors import UsageError


def require(name: str) -> ModuleType:
    """Import ``name`` or raise a one-line error saying how to install it (no deep import traceback)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UsageError(
            f"{name.partition('.')[0]} is not installed; saving, loading and ONNX export need the 'export' extra: "
            "pip install 'pruneaware[export]'"
        ) from None
