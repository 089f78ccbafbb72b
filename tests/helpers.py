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
