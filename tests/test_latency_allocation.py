"""Latency allocation: widths from sensitivity and the table meet the budget in fast, rounded sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruneaware as pa
from pruneaware.core.errors import ConfigError
from pruneaware.hardware import predict_latency


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(), nn.Conv2d(48, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4),
    )


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEAWARE_CACHE", str(tmp_path))


def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 16, 16, generator=generator), torch.randint(0, 4, (8,), generator=generator)) for _ in range(4)]


def test_allocation_meets_the_latency_budget_in_rounded_widths():
    model, batches = cnn(), data()
    schedule = {"type": "linear", "final": 0.6, "begin": 0, "end": 1.0, "every": 0.5}
    recipe = pa.Recipe.from_dict({
        "structured": {"schedule": schedule, "max_layer_ratio": 0.8, "target": {"latency": 0.6, "threads": 1}},
        "stages": ["channels", {"type": "latency_allocation", "macs": 0.7, "threads": 1}],
    })
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=4, example_inputs=batches[0][0], calibration_data=batches,
                       loss_fn=nn.functional.cross_entropy)
    for x, y in batches:
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    table = pruner.stages[0].channels.target.table
    assert predict_latency(model, table) <= 0.6 * table.dense_ms + 1e-9
    widths = [model[0].out_channels, model[3].out_channels, model[7].out_channels]
    assert all(width % 8 == 0 for width in widths) and widths != [48, 64, 64]


def test_allocation_needs_calibration_data_and_a_budget():
    schedule = {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}
    recipe = pa.Recipe.from_dict({"structured": {"schedule": schedule}, "stages": ["channels", {"type": "latency_allocation", "macs": 0.5, "threads": 1}]})
    with pytest.raises(ConfigError, match="calibration_data"):
        pa.Pruner(cnn(), None, recipe, total_steps=2, example_inputs=torch.randn(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="fraction"):
        pa.Recipe.from_dict({"stages": [{"type": "latency_allocation", "macs": 2.0}]}) and pa.Pruner(
            cnn(), None, pa.Recipe.from_dict({"structured": {"schedule": schedule}, "stages": ["channels", {"type": "latency_allocation", "macs": 2.0}]}),
            total_steps=2, example_inputs=torch.randn(1, 3, 16, 16))
