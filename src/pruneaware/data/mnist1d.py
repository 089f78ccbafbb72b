"""MNIST-1D (Greydanus 2020): generated locally by the ``mnist1d`` package and cached on disk as .npz."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
from mnist1d.data import get_dataset_args, make_dataset

from pruneaware.data.splits import DatasetSplits, make_splits
from pruneaware.core.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_ENV = "PRUNEAWARE_CACHE"
ARRAY_KEYS = ("x", "y", "x_test", "y_test")


def default_cache_dir() -> Path:
    """``$PRUNEAWARE_CACHE`` if set, else ``~/.cache/pruneaware``: where generated datasets are kept."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pruneaware")


def generation_args(num_samples: int = 5000) -> dict[str, object]:
    """The mnist1d generator's default arguments with ``num_samples`` overridden (download URL dropped)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise ConfigError("num_samples", num_samples, "an integer >= 10 (at least one sample per class)")
    args = dict(vars(get_dataset_args()))
    args.pop("url", None)
    args["num_samples"] = num_samples
    return args


def cache_path(cache_dir: Path, args: dict[str, object]) -> Path:
    """Cache file named by a hash of the generation args and mnist1d version, so other args regenerate."""
    payload = json.dumps({"args": args, "mnist1d": version("mnist1d")}, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
    return cache_dir / f"mnist1d-{args['num_samples']}-{digest}.npz"


def load_mnist1d(
    *, cache_dir: str | Path | None = None, seed: int = 0, num_samples: int = 5000
) -> DatasetSplits:
    """MNIST-1D as (N, 1, 40) float32 signals; the split is the generator's canonical one, so ``seed`` does not change it."""
    args = generation_args(num_samples)
    path = cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), args)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate(args)
        _write_cache(path, arrays)
    x_train = arrays["x"].astype(np.float32)[:, None, :]
    x_test = arrays["x_test"].astype(np.float32)[:, None, :]
    return make_splits(x_train, arrays["y"], x_test, arrays["y_test"], num_classes=10, name="mnist1d")


def _generate(args: dict[str, object]) -> dict[str, np.ndarray]:
    """Run the generator, restoring the global RNG states it reseeds so callers' randomness is untouched."""
    log.info("generating MNIST-1D (%d samples)", args["num_samples"])
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        dataset = make_dataset(_ArgsView(args))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {key: np.asarray(dataset[key]) for key in ARRAY_KEYS}


class _ArgsView:
    """Attribute access over a dict: the form ``make_dataset`` reads its arguments in."""

    def __init__(self, args: dict[str, object]):
        self.__dict__.update(args)


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unreadable (then it is regenerated)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ARRAY_KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("ignoring unreadable MNIST-1D cache %s (%s); regenerating", path, exc)
        return None
    log.debug("read MNIST-1D from cache %s", path)
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file in the same directory, then rename) so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.info("cached MNIST-1D at %s", path)
