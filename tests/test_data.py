"""Built-in datasets: shapes, dtypes, standardization, splits and the MNIST-1D disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pruneaware.data.mnist1d as mnist1d_module
from pruneaware.data import DATASETS, DatasetSplits, load_dataset
from pruneaware.core.errors import ConfigError

SMALL = 500


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def mnist1d(mnist1d_cache) -> DatasetSplits:
    return load_dataset("mnist1d", cache_dir=mnist1d_cache, num_samples=SMALL)


def test_registry_lists_builtin_datasets():
    assert {"mnist1d", "digits"} <= set(DATASETS.names())


def test_unknown_dataset_raises_config_error_listing_choices():
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar11")
    assert info.value.field == "dataset"
    assert "'mnist1d'" in str(info.value) and "'digits'" in str(info.value)


def test_mnist1d_shapes_dtypes_and_classes(mnist1d: DatasetSplits):
    x, y = mnist1d.train.tensors
    x_test, y_test = mnist1d.test.tensors
    assert mnist1d.name == "mnist1d"
    assert mnist1d.input_shape == (1, 40)
    assert mnist1d.num_classes == 10
    assert x.shape == (400, 1, 40) and x_test.shape == (100, 1, 40)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.shape == (400,) and y_test.shape == (100,)
    assert set(y.tolist()) == set(range(10))
    assert 0 <= int(y_test.min()) and int(y_test.max()) <= 9


def test_mnist1d_is_standardized_by_train_statistics(mnist1d: DatasetSplits):
    x = mnist1d.train.tensors[0]
    assert abs(float(x.mean())) < 1e-4
    assert float(x.std()) == pytest.approx(1.0, abs=1e-2)


def test_mnist1d_second_load_reads_the_cache(mnist1d, mnist1d_cache, monkeypatch):
    files = list(mnist1d_cache.glob("*.npz"))
    assert len(files) == 1 and f"-{SMALL}-" in files[0].name

    def no_generation(*args, **kwargs):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(mnist1d_module, "make_dataset", no_generation)
    again = load_dataset("mnist1d", cache_dir=mnist1d_cache, num_samples=SMALL)
    assert torch.equal(again.train.tensors[0], mnist1d.train.tensors[0])
    assert torch.equal(again.test.tensors[1], mnist1d.test.tensors[1])
    assert not list(mnist1d_cache.glob("*.tmp"))


def test_mnist1d_other_num_samples_uses_another_file(tmp_path):
    small = mnist1d_module.cache_path(tmp_path, mnist1d_module.generation_args(SMALL))
    default = mnist1d_module.cache_path(tmp_path, mnist1d_module.generation_args())
    assert small != default
    splits = load_dataset("mnist1d", cache_dir=tmp_path, num_samples=300)
    assert len(splits.train) + len(splits.test) == 300
    assert [p.name for p in tmp_path.glob("*.npz")] == [
        mnist1d_module.cache_path(tmp_path, mnist1d_module.generation_args(300)).name
    ]


def test_mnist1d_unreadable_cache_is_regenerated(tmp_path):
    path = mnist1d_module.cache_path(tmp_path, mnist1d_module.generation_args(200))
    path.write_bytes(b"not an npz file")
    splits = load_dataset("mnist1d", cache_dir=tmp_path, num_samples=200)
    assert len(splits.train) == 160
    with np.load(path, allow_pickle=False) as data:
        assert data["x"].shape == (160, 40)


def test_mnist1d_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(mnist1d_module.CACHE_ENV, str(tmp_path))
    assert mnist1d_module.default_cache_dir() == tmp_path
    load_dataset("mnist1d", num_samples=100)
    assert len(list(tmp_path.glob("mnist1d-100-*.npz"))) == 1


def test_mnist1d_generation_leaves_global_rng_untouched(tmp_path):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load_dataset("mnist1d", cache_dir=tmp_path, num_samples=100)
    assert np.random.rand() == expected


def test_mnist1d_rejects_bad_num_samples(tmp_path):
    with pytest.raises(ConfigError, match="num_samples"):
        load_dataset("mnist1d", cache_dir=tmp_path, num_samples=0)


def test_digits_shapes_range_and_stratified_split():
    splits = load_dataset("digits", seed=0)
    x, y = splits.train.tensors
    x_test, y_test = splits.test.tensors
    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 10 and splits.name == "digits"
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(x) + len(x_test) == 1797
    assert len(x_test) == pytest.approx(0.2 * 1797, abs=1)
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-3)
    train_share = torch.bincount(y, minlength=10).double() / len(y)
    test_share = torch.bincount(y_test, minlength=10).double() / len(y_test)
    assert torch.allclose(train_share, test_share, atol=0.01)


def test_digits_split_is_deterministic_per_seed():
    first = load_dataset("digits", seed=1)
    again = load_dataset("digits", seed=1)
    other = load_dataset("digits", seed=2)
    assert torch.equal(first.test.tensors[0], again.test.tensors[0])
    assert not torch.equal(first.test.tensors[0], other.test.tensors[0])
