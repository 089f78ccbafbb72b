"""Checkpoint weights a structured run's model cannot take yet, held back until its channel removals are replayed.

A structured run's checkpoint is slimmer than the model a script builds, and trainers load a
checkpoint's weights before any callback can replay the removals. While a ``DeferredWeights`` is
attached, entries whose shapes do not fit are taken out of that load (and out of its missing
keys) and kept; ``load_into`` loads them once the pruner has slimmed the model to match.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from pruneaware.core.errors import StateError


class DeferredWeights:
    """Load hooks on ``model`` that hold back checkpoint tensors of the wrong shape; ``load_into`` loads them later."""

    def __init__(self, model: nn.Module):
        self.tensors: dict[str, Tensor] = {}
        self._handles = [
            model.register_load_state_dict_pre_hook(self._hold_back),
            model.register_load_state_dict_post_hook(self._not_missing),
        ]

    def _hold_back(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        current = module.state_dict()
        for key in [key for key in state_dict if key.startswith(prefix)]:
            name = key[len(prefix) :]
            if name in current and isinstance(state_dict[key], Tensor) and state_dict[key].shape != current[name].shape:
                self.tensors[name] = state_dict.pop(key)

    def _not_missing(self, module: nn.Module, incompatible: Any) -> None:
        incompatible.missing_keys[:] = [key for key in incompatible.missing_keys if key not in self.tensors]

    def detach(self) -> None:
        """Stop intercepting loads (the framework's checkpoint load is over)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def load_into(self, model: nn.Module) -> None:
        """Load the held-back tensors into ``model``, which must now have their shapes."""
        self.detach()
        if not self.tensors:
            return
        current = model.state_dict()
        misfits = [f"{name} {tuple(t.shape)} vs {tuple(current[name].shape) if name in current else 'absent'}"
                   for name, t in self.tensors.items() if name not in current or current[name].shape != t.shape]
        if misfits:
            raise StateError(
                f"checkpoint weights do not fit the model even after replaying its channel removals ({'; '.join(misfits[:3])}); "
                "resume with the model, recipe and example inputs the run started with"
            )
        model.load_state_dict(self.tensors, strict=False)
        self.tensors = {}
