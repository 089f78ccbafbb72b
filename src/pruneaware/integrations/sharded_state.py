"""The pruner state of a ``fully_shard`` (FSDP2) model in a trainer's own checkpoint file: gathered to save, re-sharded to load.

Lightning and the Hugging Face Trainer write callback state into one file with ``torch.save``,
which would keep only the writing rank's shards of the DTensor masks. Before saving, every rank
gathers them into whole tensors; when loading, each rank cuts its own shards out of them again,
laid out as the running pruner's state is, so the world size may change between the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.distributed.tensor import DTensor, distribute_tensor

from pruneaware.core.errors import StateError


def has_shards(state: Any) -> bool:
    """Whether ``state`` (nested dicts, lists and tuples) holds any DTensor."""
    if isinstance(state, DTensor):
        return True
    if isinstance(state, Mapping):
        return any(has_shards(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return any(has_shards(value) for value in state)
    return False


def gather(state: Any) -> Any:
    """``state`` with every DTensor replaced by the whole tensor (a collective: every rank calls it, in the same order)."""
    if isinstance(state, DTensor):
        return state.full_tensor()
    if isinstance(state, Mapping):
        return {key: gather(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(gather(value) for value in state)
    return state


def reshard(saved: Any, template: Any, where: str = "pruner state") -> Any:
    """``saved`` (from ``gather``) with each whole tensor cut into this rank's shard wherever ``template`` holds a DTensor."""
    if isinstance(template, DTensor):
        if not isinstance(saved, Tensor) or saved.shape != template.shape:
            found = tuple(saved.shape) if isinstance(saved, Tensor) else type(saved).__name__
            raise StateError(f"{where}: the checkpoint holds {found} where the sharded model needs {tuple(template.shape)}; resume with the model and recipe the run started with")
        return distribute_tensor(saved.to(template.device), template.device_mesh, template.placements, src_data_rank=None)  # every rank read the same file
    if isinstance(template, Mapping) and isinstance(saved, Mapping):
        return {key: reshard(value, template[key], f"{where}.{key}") if key in template else value for key, value in saved.items()}
    if isinstance(template, (list, tuple)) and isinstance(saved, (list, tuple)) and len(template) == len(saved):
        return type(saved)(reshard(value, part, f"{where}[{index}]") for index, (value, part) in enumerate(zip(saved, template)))
    return saved
