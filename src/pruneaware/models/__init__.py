"""Reference models, chosen by name: ``build_model("cnn1d", input_shape, num_classes)``.

Every model's final classifier is its last registered ``nn.Linear``, so a scope rule that skips the
last layer finds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pruneaware.core.errors import ConfigError
from pruneaware.models.cnn1d import CNN1d
from pruneaware.models.lenet5 import LeNet5
from pruneaware.models.mlp import MLP
from pruneaware.models.resnet20 import ResNet20
from pruneaware.core.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")

__all__ = ["MODELS", "build_model", "CNN1d", "LeNet5", "MLP", "ResNet20"]


@MODELS.register("mlp")
def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (256, 256)) -> nn.Module:
    """MLP with ReLU hidden layers of the given widths."""
    return MLP(input_shape, num_classes, hidden)


@MODELS.register("lenet300_100")
def _lenet300_100(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998), the classic pruning benchmark MLP (Han et al. 2015)."""
    return MLP(input_shape, num_classes, hidden=(300, 100))


MODELS.register("cnn1d")(CNN1d)
MODELS.register("lenet5")(LeNet5)
MODELS.register("resnet20")(ResNet20)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **options: object) -> nn.Module:
    """Build the model registered as ``name`` for inputs of ``input_shape`` (no batch dim); ``options`` go to it."""
    if num_classes < 1:
        raise ConfigError("num_classes", num_classes, "a positive integer")
    return MODELS.get(name, field="model")(tuple(input_shape), num_classes, **options)
