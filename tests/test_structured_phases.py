"""Soft and hard phases of structured pruning, and stopping at a MACs or parameter target."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core.errors import ConfigError
from pruneaware.measure import count_parameters
from pruneaware.models import build_model
from pruneaware.structured.target import forward_macs

torch.set_num_threads(1)
BATCHES = [(torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)), torch.arange(8) % 10) for i in range(4)]
EXAMPLE = BATCHES[0][0]


def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20", (3, 16, 16), 10)


def recipe(schedule: dict, **fields: object) -> pa.Recipe:
    return pa.Recipe.from_dict({"structured": {"schedule": {"unit": "step", **schedule}, **fields}})


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, index: int) -> None:
    inputs, targets = BATCHES[index % len(BATCHES)]
    loss = F.cross_entropy(model(inputs), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def zero_filters(conv: nn.Conv2d) -> int:
    return int((conv.weight.detach().flatten(1).abs().sum(1) == 0).sum())


def test_soft_phase_zeroes_channels_without_changing_shapes_then_removes_them() -> None:
    model = resnet20()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    soft = recipe({"type": "constant", "sparsity": 0.5, "begin": 1, "end": 3, "every": 2}, phase="soft", remove_at=4)
    pa.Pruner(model, optimizer, soft, total_steps=6, example_inputs=EXAMPLE)
    conv = model.stages[0][0].conv1
    train_step(model, optimizer, 0)  # soft update at step 1
    assert conv.out_channels == 16 and zero_filters(conv) > 0
    params_soft = count_parameters(model)
    train_step(model, optimizer, 1)
    train_step(model, optimizer, 2)  # soft update at step 3: re-zeroed
    zeroed = zero_filters(conv)
    assert conv.out_channels == 16 and zeroed > 0 and count_parameters(model) == params_soft
    train_step(model, optimizer, 3)  # step 4: the step-3 selection is removed for real
    assert conv.out_channels == 16 - zeroed
    assert count_parameters(model) < params_soft
    train_step(model, optimizer, 4)  # training continues on the slim model
    assert model(EXAMPLE).shape == (8, 10)


def test_soft_pruning_is_reversible_a_channel_that_regains_importance_comes_back() -> None:
    model = resnet20()
    soft = recipe({"type": "constant", "sparsity": 0.5, "begin": 0, "end": 2, "every": 1}, phase="soft", importance="l2")
    pruner = pa.Pruner(model, None, soft, total_steps=3, example_inputs=EXAMPLE)
    stem = model.stem[0]  # soft update at step 0 happened in the constructor
    zeroed = (stem.weight.detach().flatten(1).abs().sum(1) == 0).nonzero().flatten().tolist()
    assert zeroed, "the soft update zeroed nothing"
    revived = zeroed[0]
    with torch.no_grad():
        stem.weight[revived] = 10.0  # training made this filter important again
    pruner.step()  # soft update at step 1 re-ranks every channel, zeroed ones included
    assert stem.weight[revived].abs().sum() > 0, "the revived channel was zeroed again"
    assert stem.out_channels == 16
    pruner.step()  # step 2: the last update; the soft phase ends with removal
    assert stem.out_channels < 16


def test_macs_target_stops_hard_pruning_as_soon_as_it_is_met() -> None:
    model = resnet20()
    dense_macs = forward_macs(model, EXAMPLE)
    ramp = recipe({"type": "linear", "final": 0.8, "begin": 0, "end": 8, "every": 1}, target={"macs": 0.5})
    pruner = pa.Pruner(model, None, ramp, total_steps=10, example_inputs=EXAMPLE)
    history = []
    for _ in range(10):
        pruner.step()
        history.append(forward_macs(model, EXAMPLE) / dense_macs)
    assert 0.45 < history[-1] <= 0.5, "pruning did not stop just under the target"
    first_met = next(i for i, ratio in enumerate(history) if ratio <= 0.5)
    assert all(ratio == history[first_met] for ratio in history[first_met:]), "channels removed after the target was met"
    assert pruner.channels.finished


@pytest.mark.parametrize("phase", ["hard", "soft"])
def test_a_coarse_schedule_lands_just_under_the_target_instead_of_overshooting(phase: str) -> None:
    model = resnet20()
    dense_macs = forward_macs(model, EXAMPLE)
    coarse = recipe({"type": "one_shot", "sparsity": 0.8, "at": 1}, phase=phase, target={"macs": 0.5})
    pruner = pa.Pruner(model, None, coarse, total_steps=3, example_inputs=EXAMPLE)
    pruner.step()  # one update asking for 80% of the channels: far more than the target needs
    ratio = forward_macs(model, EXAMPLE) / dense_macs
    assert 0.4 < ratio <= 0.5, ratio
    assert pruner.channels.finished


def test_params_target_ends_a_soft_phase_early() -> None:
    model = resnet20()
    dense_params = count_parameters(model)
    ramp = recipe({"type": "linear", "final": 0.8, "begin": 0, "end": 8, "every": 1}, phase="soft", target={"params": 0.6})
    pruner = pa.Pruner(model, None, ramp, total_steps=10, example_inputs=EXAMPLE)
    removed_at = None
    for step in range(1, 11):
        pruner.step()
        if removed_at is None and count_parameters(model) < dense_params:
            removed_at = step
    assert removed_at is not None and removed_at < 8, "the soft phase did not end when the target was met"
    assert count_parameters(model) <= 0.6 * dense_params


def test_soft_phase_resumes_exactly() -> None:
    soft = recipe({"type": "linear", "final": 0.5, "begin": 1, "end": 5, "every": 2}, phase="soft", target={"macs": 0.3})

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, pa.Pruner]:
        model = resnet20()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        return model, optimizer, pa.Pruner(model, optimizer, soft, total_steps=8, example_inputs=EXAMPLE)

    model, optimizer, pruner = fresh()
    for index in range(4):
        train_step(model, optimizer, index)
    saved = copy.deepcopy({"pruner": pruner.state_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict()})
    assert saved["pruner"]["stages"]["channels"]["soft"], "the test should stop inside the soft phase"
    for index in range(4, 8):
        train_step(model, optimizer, index)

    resumed_model, resumed_optimizer, resumed_pruner = fresh()
    resumed_pruner.load_state_dict(saved["pruner"])
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    for index in range(4, 8):
        train_step(resumed_model, resumed_optimizer, index)
    for (name, ours), (_, theirs) in zip(model.named_parameters(), resumed_model.named_parameters()):
        assert torch.equal(ours, theirs), name
    assert resumed_pruner.state_dict()["stages"]["channels"] == pruner.state_dict()["stages"]["channels"]


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"remove_at": 3}, "phase: soft"),
        ({"target": {"macs": 0.5, "params": 0.5}}, "exactly one"),
        ({"target": {"macs": 1.2}}, "macs"),
        ({"target": {}}, "exactly one"),
        ({"phase": "gentle"}, "phase"),
    ],
)
def test_bad_phase_and_target_settings_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        recipe({"type": "one_shot", "sparsity": 0.5}, **fields)


def test_soft_removal_after_training_ends_is_refused() -> None:
    soft = recipe({"type": "one_shot", "sparsity": 0.5, "at": 1}, phase="soft", remove_at=20)
    with pytest.raises(ConfigError, match="remove_at"):
        pa.Pruner(resnet20(), None, soft, total_steps=10, example_inputs=EXAMPLE)


def test_a_run_whose_removal_happens_at_step_zero_resumes() -> None:
    at_start = recipe({"type": "one_shot", "sparsity": 0.5, "at": 0})

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, pa.Pruner]:
        model = resnet20()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, optimizer, pa.Pruner(model, optimizer, at_start, total_steps=4, example_inputs=EXAMPLE)

    model, optimizer, pruner = fresh()  # channels are removed while the pruner is built
    for index in range(2):
        train_step(model, optimizer, index)
    saved = copy.deepcopy({"pruner": pruner.state_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict()})
    resumed_model, resumed_optimizer, resumed_pruner = fresh()  # removes the same channels again
    resumed_pruner.load_state_dict(saved["pruner"])
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    for index in range(2, 4):
        train_step(model, optimizer, index)
        train_step(resumed_model, resumed_optimizer, index)
    for (name, ours), (_, theirs) in zip(model.named_parameters(), resumed_model.named_parameters()):
        assert torch.equal(ours, theirs), name

    torch.manual_seed(1)
    other = build_model("resnet20", (3, 16, 16), 10)  # other initial weights: other channels go at step 0
    other_pruner = pa.Pruner(other, None, at_start, total_steps=4, example_inputs=EXAMPLE)
    with pytest.raises(pa.StateError, match="same initial weights"):
        other_pruner.load_state_dict(saved["pruner"])


def test_structured_recipes_do_not_freeze_weights_that_happen_to_be_zero() -> None:
    model = resnet20()
    with torch.no_grad():
        model.stages[0][0].conv1.weight[0, 0] = 0.0  # e.g. a zero-initialised weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pa.Pruner(model, optimizer, recipe({"type": "one_shot", "sparsity": 0.3, "at": 3}), total_steps=4, example_inputs=EXAMPLE)
    train_step(model, optimizer, 0)
    assert model.stages[0][0].conv1.weight[0, 0].abs().sum() > 0, "a structured recipe enforced an element mask"
