"""Real MNIST from the offline asset: a restricted unpickler, the documented splits, and a cached copy."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from pruneaware.data import load_dataset
from pruneaware.data.assets import AssetError, asset_path
from pruneaware.data.mnist import load_array_pickle, read_mnist_arrays
from pruneaware.core.errors import ConfigError


class _RunsCommand:
    """Unpickling this would call os.system: the kind of file a bare pickle.load executes."""

    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_unpickler_refuses_globals_other_than_numpy_arrays() -> None:
    payload = pickle.dumps(_RunsCommand(), protocol=2)
    assert b"system" in payload
    with pytest.raises(pickle.UnpicklingError, match="refusing to load .*system"):
        load_array_pickle(payload)
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_array_pickle(pickle.dumps(eval))


def test_unpickler_rebuilds_numpy_arrays_in_tuples() -> None:
    images = np.arange(12, dtype=np.float32).reshape(3, 4)
    labels = np.array([1, 2, 3], dtype=np.int64)
    loaded = load_array_pickle(pickle.dumps(((images, labels),)))
    np.testing.assert_array_equal(loaded[0][0], images)
    assert loaded[0][1].dtype == np.int64


def test_malformed_file_names_the_fetch_command(tmp_path) -> None:
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(pickle.dumps((np.zeros(3),)))
    with pytest.raises(AssetError, match="pruneaware fetch mnist"):
        read_mnist_arrays(path)


@pytest.fixture(scope="module")
def mnist():
    try:
        asset_path("mnist")
    except AssetError:
        pytest.skip("MNIST asset absent: run `pruneaware fetch mnist` once")
    return load_dataset("mnist")


def test_mnist_splits_shapes_and_labels(mnist) -> None:
    inputs, targets = mnist.train.tensors
    assert mnist.name == "mnist" and mnist.num_classes == 10 and mnist.input_shape == (1, 28, 28)
    assert inputs.shape == (50_000, 1, 28, 28) and inputs.dtype.is_floating_point
    assert mnist.test.tensors[0].shape == (10_000, 1, 28, 28) and len(mnist.test.tensors[1]) == 10_000
    assert set(targets.unique().tolist()) == set(range(10))
    assert abs(float(inputs.mean())) < 1e-3 and abs(float(inputs.std()) - 1) < 1e-3  # standardized by train statistics


def test_mnist_train_size_takes_a_prefix(mnist) -> None:
    small = load_dataset("mnist", train_size=1000)
    assert len(small.train) == 1000 and len(small.test) == 10_000
    np.testing.assert_array_equal(small.train.tensors[1].numpy(), mnist.train.tensors[1][:1000].numpy())
    with pytest.raises(ConfigError, match="train_size"):
        load_dataset("mnist", train_size=60_000)


def test_lenet300_100_reads_flattened_images(mnist) -> None:
    from pruneaware.models import build_model

    model = build_model("lenet300_100", mnist.input_shape, mnist.num_classes)
    assert [layer.in_features for layer in model if hasattr(layer, "in_features")] == [784, 300, 100]
    assert model(mnist.test.tensors[0][:5]).shape == (5, 10)
