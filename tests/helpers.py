"""Small models and data shared by the unit tests."""

from __future__ import annotations

import torch
from torch import nn


class ThreeLayerMLP(nn.Module):
    """fc1 -> ReLU -> fc2 -> ReLU -> head, sized (inputs, hidden1, hidden2, classes)."""

    def __init__(self, sizes: tuple[int, int, int, int] = (20, 32, 40, 4)):
        super().__init__()
        inputs, hidden1, hidden2, classes = sizes
        self.fc1 = nn.Linear(inputs, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.head = nn.Linear(hidden2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def random_batches(steps: int, features: int, classes: int, seed: int = 1, batch: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` reproducible (inputs, labels) batches of random data."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, features, generator=generator), torch.randint(0, classes, (batch,), generator=generator)) for _ in range(steps)]
