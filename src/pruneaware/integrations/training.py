"""What both trainer callbacks take from a training loop: a sample batch, and the regularizer's gradient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pruneaware.core.driver import Pruner


def sample_batch(dataloader: Any, device: torch.device | None = None, size: int | None = None) -> Any:
    """The first ``size`` (default: the loader's batch size) examples of a map-style dataset, collated as the loader would; else the loader's first batch.

    Indexing the dataset draws no random numbers, so building a pruner does not shift the
    shuffling or dropout of the run it joins.
    """
    dataset = getattr(dataloader, "dataset", None)
    collate = getattr(dataloader, "collate_fn", None)
    size = size or getattr(dataloader, "batch_size", None) or 1
    if collate is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__") and len(dataset) > 0:
        batch = collate([dataset[index] for index in range(min(size, len(dataset)))])
    else:
        batch = next(iter(dataloader))
    return to_device(batch, device)


def to_device(batch: Any, device: torch.device | None) -> Any:
    """``batch`` with every tensor (in tuples, lists and mappings) moved to ``device``."""
    if device is None:
        return batch
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def backward_penalty(pruner: Pruner) -> None:
    """Add the gradient of ``pruner.penalty()`` to the parameters' gradients: what ``loss + pruner.penalty()`` gives.

    Called once per optimizer step, after the (accumulated) backward passes and before the step.
    """
    penalty = pruner.penalty()
    if isinstance(penalty, Tensor) and penalty.requires_grad:
        penalty.backward()
