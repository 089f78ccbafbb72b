"""Pruning inside other people's training loops: a PyTorch Lightning callback and a Hugging Face Trainer callback.

Imported lazily, so ``import pruneaware`` needs neither Lightning nor transformers:

- ``pa.integrations.PruningCallback`` (``pruneaware.integrations.lightning``): ``Trainer(callbacks=[PruningCallback("default")])``
- ``pa.integrations.HFPruningCallback`` (``pruneaware.integrations.hf_trainer``): ``Trainer(..., callbacks=[HFPruningCallback(recipe)])``
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PruningCallback": ("pruneaware.integrations.lightning", "PruningCallback"),
    "HFPruningCallback": ("pruneaware.integrations.hf_trainer", "PruningCallback"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(module), attribute)
