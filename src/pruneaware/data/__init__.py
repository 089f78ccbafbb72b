"""Built-in datasets, chosen by name: ``load_dataset("mnist1d")`` or ``load_dataset("digits")``."""

from __future__ import annotations

from pathlib import Path

from pruneaware.data.digits import load_digits
from pruneaware.data.mnist import load_mnist
from pruneaware.data.mnist1d import load_mnist1d
from pruneaware.data.splits import DATASETS, DatasetSplits

DATASETS.register("mnist1d")(load_mnist1d)
DATASETS.register("digits")(load_digits)
DATASETS.register("mnist")(load_mnist)

__all__ = ["DATASETS", "DatasetSplits", "load_dataset"]


def load_dataset(
    name: str, *, cache_dir: str | Path | None = None, seed: int = 0, **options: object
) -> DatasetSplits:
    """Load the dataset registered as ``name``; ``options`` go to its loader (e.g. ``num_samples`` for mnist1d)."""
    return DATASETS.get(name, field="dataset")(cache_dir=cache_dir, seed=seed, **options)
