"""The train/test pair every built-in dataset returns, and the standardization they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

from pruneaware.core.registry import Registry


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's train and test splits plus the shapes a model is built from."""

    train: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]
    num_classes: int
    name: str


DATASETS: Registry[DatasetSplits] = Registry("dataset")


def make_splits(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_classes: int,
    name: str,
) -> DatasetSplits:
    """Standardize by train statistics (so no test information leaks) and wrap as float32/int64 tensors."""
    mean = float(x_train.mean())
    std = float(x_train.std()) or 1.0
    train = TensorDataset(_inputs(x_train, mean, std), torch.from_numpy(np.asarray(y_train, dtype=np.int64)))
    test = TensorDataset(_inputs(x_test, mean, std), torch.from_numpy(np.asarray(y_test, dtype=np.int64)))
    return DatasetSplits(train, test, tuple(x_train.shape[1:]), num_classes, name)


def _inputs(x: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """Inputs standardized with the given statistics, as a contiguous float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray((x - mean) / std, dtype=np.float32))
