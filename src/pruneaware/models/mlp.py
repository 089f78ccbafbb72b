"""Fully connected classifier: the simplest model to prune, and LeNet-300-100 when hidden=(300, 100)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from pruneaware.core.errors import ConfigError


class MLP(nn.Sequential):
    """Flatten, then Linear-ReLU per hidden width, then a Linear classifier (the last layer)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (256, 256)):
        if any(width < 1 for width in hidden):
            raise ConfigError("hidden", tuple(hidden), "positive layer widths")
        layers: list[nn.Module] = [nn.Flatten()]
        in_features = math.prod(input_shape)
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)
