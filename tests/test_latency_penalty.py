"""The latency penalty steers removal toward the channels that cost the most time, unlike the plain group penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruneaware as pa
from pruneaware.core.errors import ConfigError


def two_costs() -> nn.Sequential:
    """conv0's channels run at 32x32 (and feed conv2 there); conv3's at 4x4: 64x cheaper per channel."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.ReLU(),
        nn.AvgPool2d(8), nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4),
    )
    norms = torch.linspace(0.5, 1.5, 32)
    with torch.no_grad():  # every layer's channels start with the same spread of norms
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                unit = torch.nn.functional.normalize(torch.randn_like(module.weight).flatten(1), dim=1)
                module.weight.copy_((unit * norms[torch.randperm(32)].unsqueeze(1)).view_as(module.weight))
    return model


def removed_from(stages: list | None, regularizer: dict | None, steps: int = 12) -> dict[int, int]:
    model, x = two_costs(), torch.randn(4, 3, 32, 32)
    schedule = {"type": "one_shot", "sparsity": 0.5, "at": steps - 2, "unit": "step"}
    structured = {"schedule": schedule, "allocation": "global", "max_layer_ratio": 0.9}
    if regularizer is not None:
        structured["regularizer"] = regularizer
    recipe = pa.Recipe.from_dict({"structured": structured, **({"stages": stages} if stages else {})})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=steps, example_inputs=x)
    for _ in range(steps):
        loss = pruner.penalty() + 0 * model(x).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {index: 32 - model[index].out_channels for index in (0, 2, 5)}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEAWARE_CACHE", str(tmp_path))


@pytest.mark.slow
def test_latency_penalty_removes_the_expensive_channels_first():
    plain = removed_from(None, {"type": "group_lasso", "strength": 0.5})
    timed = removed_from(["channels", {"type": "latency_penalty", "strength": 0.5, "threads": 1}], None)
    print("removed per layer: group lasso", plain, "latency penalty", timed)
    assert sum(plain.values()) == pytest.approx(sum(timed.values()), abs=2)  # the same global fraction
    # conv0's and conv2's outputs run at 32x32: the penalty takes more of them, and fewer of the 4x4 conv5's
    assert timed[0] + timed[2] > plain[0] + plain[2]
    assert timed[5] / sum(timed.values()) < plain[5] / sum(plain.values())


def test_latency_penalty_needs_channel_removal():
    model = two_costs()
    recipe = pa.Recipe.from_dict({
        "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}},
        "stages": ["prune", {"type": "latency_penalty", "strength": 0.1}],
    })
    with pytest.raises(ConfigError, match="structured section"):
        pa.Pruner(model, None, recipe, total_steps=2, example_inputs=torch.randn(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="positive"):
        pa.Recipe.from_dict({"stages": [{"type": "latency_penalty", "strength": -1}]}) and pa.Pruner(
            model, None, pa.Recipe.from_dict({"structured": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}},
                                              "stages": ["channels", {"type": "latency_penalty", "strength": -1}]}),
            total_steps=2, example_inputs=torch.randn(1, 3, 32, 32))
