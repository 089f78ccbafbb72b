"""Latency targets in structured recipes: removal stops at the predicted budget; bad targets are refused clearly."""

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
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def recipe(target: dict, final: float = 0.8) -> pa.Recipe:
    schedule = {"type": "linear", "final": final, "begin": 0, "end": 1.0, "every": 0.25}
    return pa.Recipe.from_dict({"structured": {"schedule": schedule, "target": target}})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEAWARE_CACHE", str(tmp_path))


def test_removal_stops_once_predicted_latency_meets_the_budget():
    model, x = cnn(), torch.randn(2, 3, 24, 24)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe({"latency": 0.6, "threads": 1}), total_steps=8, example_inputs=x)
    target = pruner.stages[0].channels.target
    dense = target.measure(cnn(), x)  # the table is cached: the same prediction for a fresh dense model
    for _ in range(8):
        loss = model(x).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    reached = predict_latency(model, target.table)
    assert reached <= 0.6 * dense
    assert pruner.stages[0].channels.finished  # the target, not the schedule's end, stopped it
    assert model[0].out_channels < 64


def test_latency_target_options_are_checked():
    with pytest.raises(Exception, match="exactly one of"):
        recipe({"latency": 0.5, "macs": 0.5})
    with pytest.raises(Exception, match="only with a latency target"):
        recipe({"macs": 0.5, "batch": 8})
    with pytest.raises(Exception, match="backend"):
        recipe({"latency": 0.5, "backend": "tensorrt"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_backend_not_installed_is_refused_with_the_fix():
    model, x = cnn(), torch.randn(2, 3, 24, 24)
    with pytest.raises(ConfigError, match="CUDA GPU"):
        pa.Pruner(model, None, recipe({"latency": 0.5, "backend": "cuda"}), total_steps=4, example_inputs=x)


def test_unreachable_budget_names_what_is_reachable():
    model, x = cnn(), torch.randn(2, 3, 24, 24)
    with pytest.raises(ConfigError, match=r"at most about .* ms .*max_layer_ratio"):
        pa.Pruner(model, None, recipe({"latency_ms": 1e-6, "threads": 1}), total_steps=4, example_inputs=x)


def test_run_latency_target_flag_sets_the_structured_target():
    from pruneaware.hardware.overrides import with_latency_target
    from pruneaware.job.spec import RunSpec
    from pruneaware.recipe.shipped import default_recipe_path

    spec = with_latency_target(RunSpec.from_yaml(default_recipe_path("structured")), 0.5)
    assert spec.recipe.structured.target.latency == 0.5 and spec.recipe.structured.target.backend == "torch"
    assert spec.recipe.structured.schedule.final == spec.recipe.structured.max_layer_ratio  # the target decides where removal stops
    with pytest.raises(ConfigError, match="structured"):
        with_latency_target(RunSpec.from_yaml(default_recipe_path("default")), 0.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        with_latency_target(RunSpec.from_yaml(default_recipe_path("structured")), 2.0)
