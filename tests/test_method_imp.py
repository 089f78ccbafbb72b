"""Lottery tickets: iterative magnitude pruning whose survivors rewind to their step-k values after every round."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from tests.helpers import ThreeLayerMLP, random_batches
from pruneaware import Pruner, Recipe
from pruneaware.core.errors import ConfigError, UsageError
from pruneaware.methods import lottery_ticket

ROUND = 8  # steps per round: prune at 8 and 16, the final ticket trains from 16 to 24
STEPS = 3 * ROUND
PRUNED = ["fc1.weight", "fc2.weight"]


def MLP() -> nn.Module:
    return ThreeLayerMLP((20, 32, 40, 4))


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MLP()


def make_batches(steps: int = STEPS, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return random_batches(steps, 20, 4, seed)


def ticket(rewind_to: int = 0, **options) -> Recipe:
    return lottery_ticket(keep=0.5, rounds=2, every=ROUND, rewind_to=rewind_to, unit="step", **options)


def train(model, optimizer, batches, start=0, stop=None, after_step=None) -> None:
    for step in range(start, len(batches) if stop is None else stop):
        x, y = batches[step]
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(step + 1)


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("k", [0, 3])
def test_survivors_equal_the_saved_step_k_values_exactly_after_every_round(k):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    saved = {0: state_copy(model)}
    pruner = Pruner(model, optimizer, ticket(k), total_steps=STEPS)
    checked = []

    def after_step(step: int) -> None:
        saved.setdefault(step, state_copy(model))
        if step in (ROUND, 2 * ROUND):
            expected_sparsity = 1 - 0.5 ** (step // ROUND)
            assert pruner.masks.sparsity() == pytest.approx(expected_sparsity, abs=1e-3)
            for name, value in model.state_dict().items():
                if name in PRUNED:
                    mask = pruner.masks[name]
                    assert torch.equal(value[mask], saved[k][name][mask]), name
                    assert not value[~mask].any(), name
                else:  # biases and the dense classifier rewind too
                    assert torch.equal(value, saved[k][name]), name
            assert not optimizer.state, "optimizer statistics restart with each round"
            checked.append(step)

    train(model, optimizer, make_batches(), after_step=after_step)
    assert checked == [ROUND, 2 * ROUND]
    assert not torch.equal(model.fc1.weight, saved[k]["fc1.weight"] * pruner.masks["fc1.weight"]), "the last round trained"


def test_optimizer_keep_carries_momentum_through_the_rewind():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = Pruner(model, optimizer, ticket(optimizer="keep"), total_steps=STEPS)
    train(model, optimizer, make_batches(), stop=ROUND)
    assert pruner.masks.sparsity() == pytest.approx(0.5, abs=1e-3)
    assert all("momentum_buffer" in optimizer.state[p] for p in model.parameters())


def test_reinit_control_trains_the_same_mask_from_a_fresh_initialization():
    batches = make_batches()
    runs = {}
    for reinit in (False, True):
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        pruner = Pruner(model, optimizer, ticket(reinit=reinit, seed=7), total_steps=STEPS)
        weights = {}
        train(model, optimizer, batches, after_step=lambda step: weights.setdefault(step, state_copy(model)))
        runs[reinit] = (pruner, weights)
    (ticket_pruner, ticket_weights), (control_pruner, control_weights) = runs[False], runs[True]

    for step in range(1, 2 * ROUND):  # identical until the last rewind
        assert all(torch.equal(ticket_weights[step][n], control_weights[step][n]) for n in ticket_weights[step]), step
    for name in PRUNED:
        assert torch.equal(ticket_pruner.masks[name], control_pruner.masks[name])

    fresh = make_model()  # what the control draws: every layer's reset_parameters() under its seed
    torch.manual_seed(7)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    after_rewind = control_weights[2 * ROUND]
    for name, value in fresh.state_dict().items():
        expected = value * control_pruner.masks[name] if name in PRUNED else value
        assert torch.equal(after_rewind[name], expected), name
        assert not torch.equal(after_rewind[name], ticket_weights[2 * ROUND][name]), name


def test_reinit_leaves_the_global_random_state_alone():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    Pruner(model, optimizer, ticket(reinit=True, seed=3), total_steps=STEPS)
    torch.manual_seed(11)
    train(model, optimizer, make_batches())
    after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(3))


def test_round_step_restarts_a_learning_rate_schedule_per_round():
    """A plain loop restarts its LR schedule each round by keying it on ``pruner.stage("rewind").rewind.round_step``."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = Pruner(model, optimizer, ticket(rewind_to=2), total_steps=STEPS)
    assert [pruner.stage("rewind").rewind.round_step(s) for s in (0, 2, 7, 8, 9, 15, 16, 17, 24)] == [0, 2, 7, 2, 3, 9, 2, 3, 10]

    cosine = lambda step: 0.5 * (1 + math.cos(math.pi * step / (ROUND + 2)))  # noqa: E731 - one round of training from step 2
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine(pruner.stage("rewind").rewind.round_step(step)))
    lrs = {}

    def after_step(step: int) -> None:
        schedule.step()
        lrs[step] = optimizer.param_groups[0]["lr"]

    train(model, optimizer, make_batches(), after_step=after_step)
    assert lrs[ROUND] == pytest.approx(0.1 * cosine(2)) and lrs[ROUND + 3] == pytest.approx(lrs[5])
    assert lrs[2 * ROUND + 1] == pytest.approx(lrs[3])


@pytest.mark.parametrize("stop_at", [2, 5, 8, 13, 16, 20])  # before and after the snapshot at 3; 8 and 16 prune and rewind
def test_resume_mid_run_is_bit_identical(stop_at):
    recipe, batches = ticket(3), make_batches()
    model_a = make_model()
    optimizer_a = torch.optim.Adam(model_a.parameters(), lr=0.01)
    Pruner(model_a, optimizer_a, recipe, total_steps=STEPS)
    train(model_a, optimizer_a, batches)

    model_b = make_model()
    optimizer_b = torch.optim.Adam(model_b.parameters(), lr=0.01)
    pruner_b = Pruner(model_b, optimizer_b, recipe, total_steps=STEPS)
    train(model_b, optimizer_b, batches, stop=stop_at)
    buffer = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "optimizer": optimizer_b.state_dict(), "pruner": pruner_b.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer)  # weights_only: the snapshot is plain tensors

    model_c = make_model(seed=99)
    optimizer_c = torch.optim.Adam(model_c.parameters(), lr=0.01)
    pruner_c = Pruner(model_c, optimizer_c, recipe, total_steps=STEPS)
    pruner_c.load_state_dict(state["pruner"])
    model_c.load_state_dict(state["model"])
    optimizer_c.load_state_dict(state["optimizer"])
    train(model_c, optimizer_c, batches, start=stop_at)
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), name


def test_snapshot_is_part_of_the_pruner_state():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = Pruner(model, optimizer, ticket(3), total_steps=STEPS)
    assert pruner.state_dict()["stages"]["rewind"]["rewind"] == {"snapshot": None}
    train(model, optimizer, make_batches(), stop=3)
    snapshot = pruner.state_dict()["stages"]["rewind"]["rewind"]["snapshot"]
    assert set(snapshot) == set(model.state_dict())
    assert all(torch.equal(snapshot[n], v) for n, v in model.state_dict().items())


def test_rewind_point_must_precede_the_first_round():
    with pytest.raises(ConfigError, match=r"pruning\.rewind\.to.*step 8.*before the first pruning round"):
        Pruner(make_model(), None, ticket(ROUND, optimizer="keep"), total_steps=STEPS)


def test_resetting_the_optimizer_needs_the_optimizer():
    with pytest.raises(UsageError, match="optimizer"):
        Pruner(make_model(), None, ticket(), total_steps=STEPS)
    Pruner(make_model(), None, ticket(optimizer="keep"), total_steps=STEPS)


@pytest.mark.parametrize(
    "rewind,match",
    [
        ({"optimizer": "restart"}, r"pruning\.rewind\.optimizer.*'reset' or 'keep'"),
        ({"to": -1}, r"pruning\.rewind\.to"),
        ({"when": 0}, r"pruning\.rewind\.when.*no such field"),
    ],
)
def test_bad_rewind_fields_raise_config_errors(rewind, match):
    data = copy.deepcopy(ticket().to_dict())
    data["pruning"]["rewind"] = rewind
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(data)


def test_rewind_cannot_be_combined_with_splicing():
    data = ticket().to_dict()
    data["pruning"]["splice"] = {"band": 0.1}
    with pytest.raises(ConfigError, match="at most one of 'rewind', 'splice', 'regrow'"):
        Recipe.from_dict(data)
