"""Save and load slimmed models without pickle: ``model.safetensors`` plus ``spec.json`` in one folder."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from pruneaware.core.errors import StateError, UsageError
from pruneaware.export.dependencies import require
from pruneaware.export.resize import apply_spec
from pruneaware.export.spec import SPEC_FILE, WEIGHTS_FILE, ModelSpec, describe
from pruneaware.structured.graph import unwrap_model


def save(model: nn.Module, path: str | Path, *, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` to the folder ``path`` (weights + spec), replacing an earlier save as one unit.

    ``metadata`` (JSON-serializable) is stored in the spec and returned by ``read_spec``. Tied
    tensors are stored once. The folder is written next to ``path`` and renamed into place, so a
    reader sees the old save or the new one, never a mix.
    """
    safetensors_torch = require("safetensors.torch")
    model = unwrap_model(model)
    spec = describe(model, metadata)
    target = Path(path)
    if target.exists() and not (target / SPEC_FILE).is_file():
        raise UsageError(f"{target} exists and is not a saved model; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    staging.mkdir()  # ordinary permissions (a mkdtemp folder would stay private to its owner)
    try:
        safetensors_torch.save_model(model, str(staging / WEIGHTS_FILE))
        (staging / SPEC_FILE).write_text(spec.to_json(), encoding="utf-8")
        for file in (WEIGHTS_FILE, SPEC_FILE):
            _fsync(staging / file)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load(path: str | Path, build_model_fn: Callable[[], nn.Module]) -> nn.Module:
    """Rebuild a saved model: ``build_model_fn()``'s dense model, resized to the spec, weights loaded strictly."""
    safetensors_torch = require("safetensors.torch")
    spec = read_spec(path)
    model = build_model_fn()
    if not isinstance(model, nn.Module):
        raise UsageError(f"build_model_fn must return an nn.Module; it returned {type(model).__name__}")
    apply_spec(model, spec)
    weights = Path(path) / WEIGHTS_FILE
    try:
        safetensors_torch.load_model(model, str(weights), strict=True)
    except require("safetensors").SafetensorError as error:
        raise StateError(
            f"{weights} is damaged or incomplete ({error}), e.g. a copy or download that did not finish; copy the folder "
            "again, or save the model again with pruneaware.save"
        ) from None
    except (OSError, RuntimeError) as error:
        raise StateError(f"cannot load the weights in {weights}: {error}") from None
    return model


def read_spec(path: str | Path) -> ModelSpec:
    """The spec of the model saved in the folder ``path`` (shapes, attributes and metadata)."""
    spec_file = Path(path) / SPEC_FILE
    if not spec_file.is_file():
        raise StateError(f"no {SPEC_FILE} in {path}: not a folder written by pruneaware.save")
    return ModelSpec.from_json(spec_file.read_text(encoding="utf-8"), source=str(spec_file))


def _swap_in(staging: Path, target: Path) -> None:
    """Rename the finished folder to ``target``; an earlier save is moved aside first, then deleted."""
    retired = staging.with_name(staging.name + ".old")
    if target.exists():
        os.replace(target, retired)
    os.replace(staging, target)
    _fsync(target.parent)
    shutil.rmtree(retired, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk, so a power loss cannot leave a renamed but empty file."""
    if os.name == "nt" and path.is_dir():
        return  # folders cannot be opened for fsync on Windows
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
