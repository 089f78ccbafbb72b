"""Reference models: each builds, forwards on its dataset's shape and ends in the classifier Linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneaware.core.errors import ConfigError
from pruneaware.models import MODELS, build_model

SHAPES = {
    "mlp": [(1, 40), (1, 8, 8)],
    "lenet300_100": [(1, 28, 28), (1, 8, 8)],
    "cnn1d": [(1, 40), (3, 100)],
    "lenet5": [(1, 28, 28), (1, 8, 8), (3, 32, 32)],
    "resnet20": [(3, 32, 32), (1, 8, 8)],
}


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def test_every_registered_model_has_test_shapes():
    assert set(MODELS.names()) == set(SHAPES)


@pytest.mark.parametrize(("name", "shape"), [(n, s) for n, shapes in SHAPES.items() for s in shapes])
def test_model_builds_and_forwards(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7)
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    assert last_linear(model).out_features == 7


def test_resnet20_structure():
    model = build_model("resnet20", (3, 32, 32), 10)
    assert last_linear(model) is model.fc
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 20  # 19 3x3 convs + the fc layer
    shortcuts = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(c.in_channels, c.out_channels) for c in shortcuts] == [(16, 32), (32, 64)]
    assert 0.26e6 < sum(p.numel() for p in model.parameters()) < 0.28e6


def test_mlp_widths_and_lenet300_100():
    mlp = build_model("mlp", (1, 40), 10, hidden=(64,))
    assert [(m.in_features, m.out_features) for m in mlp.modules() if isinstance(m, nn.Linear)] == [(40, 64), (64, 10)]
    default = build_model("mlp", (1, 40), 10)
    assert [m.out_features for m in default.modules() if isinstance(m, nn.Linear)] == [256, 256, 10]
    lenet = build_model("lenet300_100", (1, 28, 28), 10)
    assert [(m.in_features, m.out_features) for m in lenet.modules() if isinstance(m, nn.Linear)] == [
        (784, 300),
        (300, 100),
        (100, 10),
    ]


def test_cnn1d_flatten_size_follows_input_length():
    short = build_model("cnn1d", (1, 40), 10)
    long = build_model("cnn1d", (1, 100), 10)
    assert short.classifier[0].in_features == 64 * 5
    assert long.classifier[0].in_features == 64 * 13


def test_lenet5_keeps_classic_sizes_on_mnist():
    model = build_model("lenet5", (1, 28, 28), 10)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [120, 84, 10]
    assert model.classifier[0].in_features == 16 * 5 * 5


def test_unknown_model_raises_config_error_listing_choices():
    with pytest.raises(ConfigError) as info:
        build_model("vgg99", (1, 40), 10)
    assert info.value.field == "model"
    for name in SHAPES:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    ("name", "shape"), [("resnet20", (1, 40)), ("lenet5", (1, 40)), ("cnn1d", (1, 8, 8)), ("lenet5", (1, 3, 3))]
)
def test_wrong_input_rank_raises_config_error(name, shape):
    with pytest.raises(ConfigError, match="input_shape"):
        build_model(name, shape, 10)


def test_bad_num_classes_raises_config_error():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", (1, 40), 0)
