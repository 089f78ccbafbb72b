"""Real MNIST (the classic 50k/10k/10k split) from the offline ``mnist`` asset, read without running arbitrary pickles.

The asset is a gzipped pickle of numpy arrays. ``pickle.load`` would execute whatever callable the
file names, so it is read with an unpickler that resolves only numpy's array-reconstruction globals,
and the arrays are cached as a plain ``.npz`` (read with ``allow_pickle=False``) next to the asset.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the array internals; pickles written by numpy 1 still name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core import multiarray as _multiarray

from pruneaware.data.assets import AssetError, asset_path
from pruneaware.data.splits import DatasetSplits, make_splits
from pruneaware.core.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_SHAPE = (1, 28, 28)
_ARRAY_GLOBALS = {
    **{(module, name): getattr(_multiarray, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global (functions, classes, modules)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ARRAY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays may appear in this file") from None


def load_array_pickle(data: bytes) -> Any:
    """Unpickle ``data`` that may hold only numpy arrays in plain containers (Python 2 pickles included)."""
    return ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()


def read_mnist_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The six arrays of ``mnist.pkl.gz`` as ``x_train, y_train, x_val, ...`` (images flattened, float32 in [0, 1])."""
    with gzip.open(path, "rb") as stream:
        content = load_array_pickle(stream.read())
    if not (isinstance(content, tuple) and len(content) == 3 and all(isinstance(pair, tuple) and len(pair) == 2 for pair in content)):
        raise AssetError(f"{path}: expected ((x_train, y_train), (x_val, y_val), (x_test, y_test)); run `pruneaware fetch mnist` again")
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels) in zip(SPLITS, content):
        arrays[f"x_{split}"] = np.asarray(images, dtype=np.float32)
        arrays[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    return arrays


def load_mnist(*, cache_dir: str | Path | None = None, seed: int = 0, train_size: int | None = None) -> DatasetSplits:
    """MNIST as (N, 1, 28, 28) images: the 50k train split (or its first ``train_size``) and the 10k test split.

    The 10k validation split is not used. ``seed`` is unused (the split is fixed by the file).
    """
    arrays = _cached_arrays(asset_path("mnist", cache_dir=cache_dir))
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, int) or not 10 <= train_size <= len(y_train):
            raise ConfigError("train_size", train_size, f"an integer in [10, {len(y_train)}]")
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    return make_splits(
        x_train.reshape(-1, *IMAGE_SHAPE), y_train, arrays["x_test"].reshape(-1, *IMAGE_SHAPE), arrays["y_test"], num_classes=10, name="mnist"
    )


def _cached_arrays(source: Path) -> dict[str, np.ndarray]:
    """The arrays from the ``.npz`` cache beside ``source``, converted from the pickle once."""
    cache = source.with_suffix("").with_suffix(".npz")
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    arrays = read_mnist_arrays(source)
    temporary = cache.with_name(f".{cache.name}.tmp.npz")
    np.savez(temporary, **arrays)
    temporary.replace(cache)
    log.info("mnist: cached arrays in %s", cache)
    return arrays
