"""Data from the user's own ``package.module:function``: datasets, loaders or ready splits."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pruneaware.data.batches import head
from pruneaware.data.splits import DatasetSplits
from pruneaware.core.errors import ConfigError
from pruneaware.models.imports import import_object

FIELD = "train.dataset"
RETURNS = "DatasetSplits, (train, validation) or {'train': ..., 'test'|'val': ..., 'num_classes': n} of map-style datasets or DataLoaders"


def load_factory_data(reference: str, *, seed: int = 0, **options: Any) -> DatasetSplits:
    """Call the factory (with ``seed`` when it takes one, and ``options``) and describe what it returned."""
    factory = import_object(reference, FIELD)
    if "seed" in inspect.signature(factory).parameters and "seed" not in options:
        options = {**options, "seed": seed}
    try:
        returned = factory(**options)
    except TypeError as error:
        raise ConfigError("train.data_options", options, f"keyword arguments {reference} accepts ({error})") from None
    if isinstance(returned, DatasetSplits):
        return returned
    train, test, num_classes = _parts(returned, reference)
    return DatasetSplits(train, test, _input_shape(train, reference), num_classes or _count_classes(train, test), reference)


def _parts(returned: Any, reference: str) -> tuple[Dataset, Dataset, int | None]:
    num_classes = None
    if isinstance(returned, Mapping):
        num_classes = returned.get("num_classes")
        test = next((returned[key] for key in ("test", "val", "validation") if key in returned), None)
        parts = (returned.get("train"), test)
    elif isinstance(returned, (tuple, list)) and len(returned) == 2:
        parts = tuple(returned)
    else:
        raise ConfigError(FIELD, reference, f"a factory returning {RETURNS}; it returned {type(returned).__name__}")
    datasets = [part.dataset if isinstance(part, DataLoader) else part for part in parts]
    for name, dataset in zip(("train", "test"), datasets):
        if not (isinstance(dataset, Dataset) and hasattr(dataset, "__len__") and len(dataset) > 0):  # type: ignore[arg-type]
            raise ConfigError(FIELD, reference, f"a non-empty map-style {name} dataset in {RETURNS}")
    return datasets[0], datasets[1], num_classes


def _input_shape(dataset: Dataset, reference: str) -> tuple[int, ...]:
    sample = dataset[0]
    if not (isinstance(sample, (tuple, list)) and len(sample) >= 2 and isinstance(sample[0], torch.Tensor)):
        raise ConfigError(FIELD, reference, "datasets whose items are (input tensor, target) pairs")
    return tuple(sample[0].shape)


def _count_classes(train: Dataset, test: Dataset) -> int:
    """``classes`` when the dataset names them, else the largest integer label + 1 (from the labels, read once)."""
    classes = getattr(train, "classes", None)
    if classes is not None:
        return len(classes)
    labels = [dataset.tensors[1] if isinstance(dataset, TensorDataset) else head(dataset, len(dataset))[1] for dataset in (train, test)]  # type: ignore[arg-type]
    return int(max(int(torch.as_tensor(part).max()) for part in labels)) + 1
