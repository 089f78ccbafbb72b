"""Small 1-D CNN for MNIST-1D signals: three strided convolutions, then two Linear layers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError


class CNN1d(nn.Module):
    """Conv1d 32/64/64 (stride 2 each), Linear 128, Linear classifier; input is (channels, length)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if len(input_shape) != 2:
            raise ConfigError("input_shape", input_shape, "(channels, length) for cnn1d")
        channels, _ = input_shape
        self.features = nn.Sequential(
            nn.Conv1d(channels, 32, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.classifier = nn.Sequential(nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
