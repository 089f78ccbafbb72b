"""The core: the Pruner as a driver over stages, the stage protocol, the shared context, the registries and the leaves every part uses (errors, masks, scope).

``Context`` and ``Pruner`` load on first use, so a leaf such as ``pruneaware.core.errors`` imports
without the driver and everything it pulls in.
"""

from importlib import import_module
from typing import Any

from pruneaware.core.registry import STAGES, Registry, register_stage
from pruneaware.core.stage import Stage

_LAZY = {"Context": "pruneaware.core.context", "Pruner": "pruneaware.core.driver"}

__all__ = ["STAGES", "Context", "Pruner", "Registry", "Stage", "register_stage"]


def __getattr__(name: str) -> Any:
    """``Context`` or ``Pruner``, imported when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
