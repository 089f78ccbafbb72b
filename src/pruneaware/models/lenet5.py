"""LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, sized for 28x28 MNIST and 8x8 digits alike."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError

MIN_SIDE = 4
"""Smallest image side for which both pooling stages still leave at least one pixel."""


class LeNet5(nn.Module):
    """conv 6@5x5 - pool - conv 16@5x5 - pool - FC 120 - FC 84 - FC classes; input is (channels, H, W)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if len(input_shape) != 3 or min(input_shape[1:]) < MIN_SIDE:
            raise ConfigError("input_shape", input_shape, f"(channels, H, W) with H, W >= {MIN_SIDE} for lenet5")
        channels, height, width = input_shape
        # conv1 is padded by 2 as in the original (28x28 MNIST is padded to 32x32); conv2 is unpadded as in
        # the original when its input is large enough (>= 6 after pooling), and "same"-padded for small images.
        conv2_padding = 0 if min(height, width) // 2 >= 6 else 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=conv2_padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
