"""Structured pruning says what it removed against what was asked, and refuses targets it cannot reach."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core.errors import ConfigError

INPUTS = torch.randn(8, 1, 40, generator=torch.Generator().manual_seed(0))


def convnet() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 16, 3), nn.ReLU(), nn.Conv1d(16, 32, 3), nn.ReLU(), nn.Conv1d(32, 32, 3), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def prune(model: nn.Module, final: float, cap: float) -> pa.Pruner:
    schedule = {"type": "one_shot", "sparsity": final, "at": 1, "unit": "step"}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    pruner = pa.Pruner(model, optimizer, {"structured": {"schedule": schedule, "max_layer_ratio": cap}}, total_steps=2, example_inputs=INPUTS)
    for _ in range(2):
        loss = F.cross_entropy(pruner.model(INPUTS), torch.arange(8))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return pruner


def counted(model: nn.Module) -> float:
    channels = [m.out_channels for m in model if isinstance(m, nn.Conv1d)]
    return 1.0 - sum(channels) / (16 + 32 + 32)


@pytest.mark.parametrize(("final", "cap"), [(0.9, 0.8), (0.5, 0.3)])
def test_a_final_above_the_layer_cap_is_refused(final, cap):
    with pytest.raises(ConfigError) as error:
        pa.Recipe.from_dict({"structured": {"schedule": {"type": "cubic", "final": final}, "max_layer_ratio": cap}})
    assert error.value.field == "recipe.structured.max_layer_ratio" and "structured.schedule.final" in str(error.value)


def test_a_final_above_the_default_cap_is_refused():
    with pytest.raises(ConfigError, match="max_layer_ratio"):
        pa.Recipe.from_dict({"structured": {"schedule": {"type": "cubic", "final": 0.95}}})


def test_every_removal_is_logged_against_the_ask(caplog):
    model = convnet()
    with caplog.at_level(logging.INFO, logger="pruneaware.structured.channels"):
        pruner = prune(model, 0.5, 0.9)
    assert pruner.channels.removed_fraction() == pytest.approx(counted(model)) == pytest.approx(0.5)
    assert "step 1: 50.0% of channels removed, 50.0% asked" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_shortfall_held_back_by_the_cap_is_a_warning(caplog):
    model = convnet()
    with caplog.at_level(logging.INFO, logger="pruneaware.structured.channels"):
        pruner = prune(model, 0.8, 0.8)
    removed = counted(model)
    assert pruner.channels.removed_fraction() == pytest.approx(removed) and removed < 0.78
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and f"only {100 * removed:.1f}% of channels removed where the schedule asks 80.0%" in warnings[0]



def test_layers_frozen_except_the_classifier_still_lose_the_channels_asked():
    model = convnet()
    for param in model[:-1].parameters():
        param.requires_grad_(False)
    pruner = prune(model, 0.5, 0.9)
    assert pruner.channels.removed_fraction() == pytest.approx(counted(model)) == pytest.approx(0.5)
    assert all(not p.requires_grad for p in model[:-1].parameters()) and model[-1].weight.requires_grad
    assert pruner.model(INPUTS).shape == (8, 10)
