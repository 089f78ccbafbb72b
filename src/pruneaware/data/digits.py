"""scikit-learn's bundled 8x8 handwritten digits: a tiny image set that needs no download."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits as _sklearn_digits
from sklearn.model_selection import train_test_split

from pruneaware.data.splits import DatasetSplits, make_splits

log = logging.getLogger(__name__)

TEST_FRACTION = 0.2


def load_digits(*, cache_dir: str | Path | None = None, seed: int = 0) -> DatasetSplits:
    """Digits as (N, 1, 8, 8) images in a stratified 80/20 split drawn with ``seed``; ``cache_dir`` is unused (bundled data)."""
    bunch = _sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=TEST_FRACTION, stratify=bunch.target, random_state=seed
    )
    log.debug("digits: %d train / %d test (split seed %d)", len(y_train), len(y_test), seed)
    return make_splits(x_train, y_train, x_test, y_test, num_classes=10, name="digits")
