"""Batches from any map-style dataset: tensor datasets are sliced, others are read item by item and collated."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate


def take(dataset: Dataset, indices: torch.Tensor) -> tuple[Any, Any]:
    """The ``(inputs, targets)`` batch of ``dataset`` at ``indices``, in that order."""
    if isinstance(dataset, TensorDataset):
        inputs, targets = dataset.tensors[:2]
        return inputs[indices], targets[indices]
    inputs, targets = default_collate([dataset[int(index)] for index in indices])[:2]
    return inputs, targets


def head(dataset: Dataset, count: int) -> tuple[Any, Any]:
    """The first ``count`` samples (or all, when fewer) as one batch."""
    return take(dataset, torch.arange(min(count, len(dataset))))  # type: ignore[arg-type]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor (or a tuple/list/dict of tensors) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch
