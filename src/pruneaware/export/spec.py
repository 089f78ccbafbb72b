"""The spec of a saved model: each module's type and shape-defining attributes, each tensor's shape.

Channel removal changes the shapes of parameters *and* the integer attributes a module's forward
reads (``Conv2d.out_channels``, ``MultiheadAttention.head_dim``, a custom ``num_heads``...). The
spec records both, so a freshly built dense model can be resized to the saved one before its
weights are loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pruneaware.core.errors import ConfigError, StateError

FORMAT = "pruneaware-model"
VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "model.safetensors"

Attribute = int | tuple[int, ...]


@dataclass(frozen=True)
class ModuleSpec:
    """A module's class name and its public integer (and integer-tuple) attributes."""

    type: str
    attributes: dict[str, Attribute]


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one state-dict entry (parameter or persistent buffer)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class ModelSpec:
    """Everything but the weights: modules and tensors by name, plus the caller's metadata."""

    modules: dict[str, ModuleSpec]
    tensors: dict[str, TensorSpec]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The text of ``spec.json``: format and version first, then one line per module and per tensor."""
        modules = {
            name: {"type": module.type, "attributes": {k: _to_json(v) for k, v in module.attributes.items()}}
            for name, module in self.modules.items()
        }
        tensors = {
            name: {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
            for name, tensor in self.tensors.items()
        }
        entries = [
            f'"format": {json.dumps(FORMAT)}',
            f'"version": {VERSION}',
            f'"modules": {_one_per_line(modules)}',
            f'"tensors": {_one_per_line(tensors)}',
            f'"metadata": {json.dumps(self.metadata)}',
        ]
        return "{\n " + ",\n ".join(entries) + "\n}\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelSpec:
        """Parse ``spec.json`` text, refusing other formats and versions with an error naming ``source``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise StateError(f"{source} is not valid JSON: {error}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StateError(f"{source} is not a pruneaware model spec (no 'format': {FORMAT!r})")
        if data.get("version") != VERSION:
            raise StateError(
                f"{source} is spec format version {data.get('version')!r}; this pruneaware reads version {VERSION}"
            )
        try:
            modules = {
                name: ModuleSpec(entry["type"], {k: _from_json(v) for k, v in entry["attributes"].items()})
                for name, entry in data["modules"].items()
            }
            tensors = {
                name: TensorSpec(tuple(entry["shape"]), _dtype(entry["dtype"]))
                for name, entry in data["tensors"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise StateError(f"{source} is malformed: {error!r}") from None
        return cls(modules, tensors, data.get("metadata", {}))


def describe(model: nn.Module, metadata: Mapping[str, Any] | None = None) -> ModelSpec:
    """The spec of ``model`` as it is now (after any channel removal)."""
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise ConfigError("metadata", metadata, f"JSON-serializable values ({error})") from None
    modules = {
        name: ModuleSpec(type(module).__qualname__, shape_attributes(module))
        for name, module in model.named_modules(remove_duplicate=False)
    }
    tensors = {name: TensorSpec(tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}
    return ModelSpec(modules, tensors, metadata)


def shape_attributes(module: nn.Module) -> dict[str, Attribute]:
    """Public attributes holding an int or a tuple of ints: every size a module's forward may read."""
    found: dict[str, Attribute] = {}
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if _is_int(value) or (isinstance(value, tuple) and value and all(_is_int(v) for v in value)):
            found[name] = tuple(value) if isinstance(value, tuple) else value
    return found


def _one_per_line(entries: dict[str, Any]) -> str:
    """A JSON object with one entry per line, so two specs diff line by line."""
    lines = ",\n".join(f"  {json.dumps(name)}: {json.dumps(value)}" for name, value in entries.items())
    return "{\n" + lines + "\n }" if entries else "{}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _to_json(value: Attribute) -> int | list[int]:
    return list(value) if isinstance(value, tuple) else value


def _from_json(value: int | list[int]) -> Attribute:
    return tuple(value) if isinstance(value, list) else int(value)


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"unknown dtype {name!r}")
    return dtype
