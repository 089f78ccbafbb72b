"""Sharded checkpoints of an FSDP2 run through ``torch.distributed.checkpoint`` (DCP): model, optimizer and pruner.

Every rank writes its own shards (masks and criterion buffers are DTensors laid out as their
parameters); loading re-shards them to the world size of the run that loads, so a run saved on 2
ranks resumes on 4. The pruner's nested state travels as a skeleton (its plain values, with
a key in place of each tensor) (one JSON string) beside a flat dictionary of its tensors, so the loading run can
rebuild a template of the right shapes from the checkpoint's metadata alone. A checkpoint saved
with another recipe is refused before anything is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from pruneaware.core.driver import Pruner
from pruneaware.distributed.dcp_reader import SafeFileSystemReader, check_metadata
from pruneaware.distributed.fsdp_masks import like_param
from pruneaware.core.errors import StateError

TENSOR = "__tensor__"


def split_tensors(state: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """``state`` with every tensor replaced by ``{TENSOR: key}``, and the tensors by key (keys are '/'-joined paths)."""
    if isinstance(state, Tensor):
        return {TENSOR: prefix}, {prefix: state}
    if isinstance(state, Mapping):
        skeleton: dict[str, Any] = {}
        tensors: dict[str, Tensor] = {}
        for key, value in state.items():
            skeleton[key], found = split_tensors(value, f"{prefix}/{key}" if prefix else str(key))
            tensors.update(found)
        return skeleton, tensors
    return state, {}


def join_tensors(skeleton: Any, tensors: Mapping[str, Tensor]) -> Any:
    """The inverse of ``split_tensors``."""
    if isinstance(skeleton, Mapping):
        if set(skeleton) == {TENSOR}:
            return tensors[skeleton[TENSOR]]
        return {key: join_tensors(value, tensors) for key, value in skeleton.items()}
    return skeleton


def save_sharded(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, pruner: Pruner) -> None:
    """Write model, optimizer and pruner state to the folder ``path``, each rank its own shards (every rank calls it)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    skeleton, tensors = split_tensors(pruner.state_dict())
    state = {"model": model_state, "optimizer": optimizer_state, "pruner": {"skeleton": json.dumps(skeleton), "tensors": tensors}}
    dcp.save(state, checkpoint_id=str(path))


def load_sharded(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, pruner: Pruner) -> None:
    """Resume from ``save_sharded``'s folder at this run's world size: the same recipe, model and optimizer type (every rank calls it)."""
    if not Path(path, ".metadata").is_file():
        raise StateError(f"{path} is not a checkpoint written by save_sharded (no .metadata file in it); pass the folder it wrote")
    check_metadata(Path(path, ".metadata"))  # a clear error here; inside dcp.load the reader's refusal is wrapped per rank
    head: dict[str, Any] = {"pruner": {"skeleton": ""}}
    dcp.load(head, storage_reader=SafeFileSystemReader(str(path)))
    skeleton = json.loads(head["pruner"]["skeleton"])
    if not isinstance(skeleton, Mapping) or skeleton.get("recipe") != pruner.recipe.fingerprint():
        saved = skeleton.get("recipe") if isinstance(skeleton, Mapping) else None
        raise StateError(
            f"checkpoint {path} was saved with a different recipe (fingerprint {saved}, this recipe {pruner.recipe.fingerprint()}); "
            "resume with the recipe the run started with"
        )
    metadata = SafeFileSystemReader(str(path)).read_metadata().state_dict_metadata
    model_state, optimizer_state = get_state_dict(model, optimizer)
    tensors = _templates(_tensor_keys(skeleton), metadata, pruner.params)
    state = {"model": model_state, "optimizer": optimizer_state, "pruner": {"tensors": tensors}}
    dcp.load(state, storage_reader=SafeFileSystemReader(str(path)))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    pruner.load_state_dict(join_tensors(skeleton, state["pruner"]["tensors"]))


def _tensor_keys(skeleton: Any) -> list[str]:
    if isinstance(skeleton, Mapping):
        if set(skeleton) == {TENSOR}:
            return [skeleton[TENSOR]]
        return [key for value in skeleton.values() for key in _tensor_keys(value)]
    return []


def _templates(keys: list[str], metadata: Mapping[str, Any], params: Mapping[str, nn.Parameter]) -> dict[str, Tensor]:
    """Empty tensors for DCP to fill: sharded like a parameter when keyed by its name and shaped like it, whole otherwise."""
    templates: dict[str, Tensor] = {}
    for key in keys:
        entry = metadata.get(f"pruner.tensors.{key}")
        if not isinstance(entry, TensorStorageMetadata):
            raise StateError(f"the checkpoint lacks the pruner tensor {key!r} its own state names; was it written completely?")
        dtype, size = entry.properties.dtype, torch.Size(entry.size)
        param = params.get(key.rsplit("/", 1)[-1])
        if isinstance(param, DTensor) and param.shape == size:
            templates[key] = like_param(torch.zeros(param.to_local().shape, dtype=dtype), param)
        else:
            templates[key] = torch.zeros(size, dtype=dtype)
    return templates
