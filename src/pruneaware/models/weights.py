"""Pretrained weights to start from: a safetensors file or a ``state_dict`` read with ``weights_only=True``."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pruneaware.core.errors import ConfigError, StateError

SHOWN = 8


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors by name; a checkpoint holding ``{'state_dict': ...}`` or ``{'model': ...}`` gives the inner mapping."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError("train.weights", str(path), "an existing .safetensors or .pt file of the model's weights")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise StateError(f"cannot read weights {str(path)!r} ({error}); save them again with safetensors.torch.save_file(model.state_dict(), path)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise StateError(
            f"cannot read weights {str(path)!r}: only tensors and plain containers load safely ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "save model.state_dict(), not the model"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not (isinstance(state, Mapping) and all(isinstance(value, torch.Tensor) for value in state.values())):
        raise StateError(f"{str(path)!r} is not a state_dict (a mapping of names to tensors); save model.state_dict()")
    return dict(state)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Copy the weights in ``path`` into ``model``; any missing, unexpected or misshapen key is an error that lists them."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    misshapen = [f"{key} {list(state[key].shape)} (model {list(own[key].shape)})" for key in own if key in state and state[key].shape != own[key].shape]
    problems = [f"{label}: {_listing(keys)}" for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", misshapen)) if keys]
    if problems:
        raise StateError(
            f"weights {str(path)!r} do not fit {type(model).__name__}: " + "; ".join(problems)
            + ". Build the model the weights were saved from (same train.model and model_options), or save its state_dict again"
        )
    model.load_state_dict(state)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN])
    return f"{shown} and {len(keys) - SHOWN} more" if len(keys) > SHOWN else shown
