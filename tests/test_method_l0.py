"""L0 regularization with hard-concrete gates: closed-form penalty, gradients through the gates, pruning and folding."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from tests.helpers import ThreeLayerMLP
from pruneaware import ConfigError, Pruner, Recipe, methods
from pruneaware.regularizers.l0 import deterministic_gates, expected_l0, sample_gates

STEPS = 120


def MLP() -> nn.Module:
    return ThreeLayerMLP((8, 16, 16, 3))


def make_batches(steps: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 8, generator=generator), torch.randint(0, 3, (16,), generator=generator)) for _ in range(steps)]


def make_run(strength: float, lr: float = 0.05) -> tuple[nn.Module, torch.optim.Optimizer, Pruner]:
    torch.manual_seed(0)
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    pruner = Pruner(model, optimizer, methods.l0_sparsity(strength, lr=lr), total_steps=STEPS)
    return model, optimizer, pruner


def train(model, optimizer, pruner, batches, start: int = 0, stop: int | None = None) -> None:
    for x, y in batches[start:stop]:
        loss = F.cross_entropy(model(x), y) + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def expected_open(pruner: Pruner) -> float:
    return float(sum(expected_l0(log_alpha.detach()).sum() for log_alpha in pruner.stage("regularizer").regularizer.log_alpha.values()))


def test_penalty_equals_the_closed_form_expected_l0_on_a_hand_example():
    model = nn.Linear(3, 1, bias=False)
    pruner = Pruner(model, None, Recipe.from_dict({"regularizer": {"type": "l0", "strength": 0.5}, "scope": {"skip_last": False}}))
    with torch.no_grad():
        pruner.stage("regularizer").regularizer.log_alpha["weight"].copy_(torch.tensor([[0.0, -2.0, 3.0]]))
    # P(gate != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)), beta = 2/3, gamma = -0.1, zeta = 1.1
    shift = -(2 / 3) * math.log(0.1 / 1.1)
    by_hand = 0.5 * sum(1 / (1 + math.exp(-(a + shift))) for a in (0.0, -2.0, 3.0))
    assert float(pruner.penalty().detach()) == pytest.approx(by_hand, rel=1e-6)
    assert pruner.penalty().requires_grad


def test_closed_form_matches_the_frequency_of_nonzero_sampled_gates():
    log_alpha = torch.tensor([-3.0, -1.0, 0.0, 2.0]).repeat(200_000, 1)
    noise = torch.rand(log_alpha.shape, generator=torch.Generator().manual_seed(0)).clamp(1e-6, 1 - 1e-6)
    gates = sample_gates(log_alpha, noise)
    assert bool(((gates >= 0) & (gates <= 1)).all())
    torch.testing.assert_close((gates > 0).double().mean(0), expected_l0(log_alpha[0]).double(), atol=5e-3, rtol=0)
    assert deterministic_gates(torch.tensor([-2.5, 0.0, 3.0])).tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-2)


def test_strong_lambda_lowers_expected_l0_and_raises_masked_sparsity():
    batches = make_batches()
    results = {}
    for strength in (1e-5, 1e-3):
        model, optimizer, pruner = make_run(strength)
        history = [(expected_open(pruner), pruner.masks.sparsity())]
        for start in range(0, STEPS, STEPS // 4):
            train(model, optimizer, pruner, batches, start=start, stop=start + STEPS // 4)
            history.append((expected_open(pruner), pruner.masks.sparsity()))
        results[strength] = history
    weak, strong = results[1e-5], results[1e-3]
    assert all(later[0] < earlier[0] and later[1] >= earlier[1] for earlier, later in zip(strong, strong[1:]))
    assert strong[-1][0] < 0.3 * strong[0][0]
    assert 0.6 < strong[-1][1] < 1.0 and strong[-1][1] > weak[-1][1] + 0.4
    assert strong[-1][0] < 0.5 * weak[-1][0]


def test_gradients_reach_weights_and_gates_through_theta_times_z():
    model, optimizer, pruner = make_run(1e-2)
    batches = make_batches(3)
    train(model, optimizer, pruner, batches, stop=2)
    regularizer = pruner.stage("regularizer").regularizer
    names = list(pruner.params)
    theta = {n: regularizer.shadow.dense[n].clone().requires_grad_() for n in names}
    log_alpha = {n: regularizer.log_alpha[n].detach().clone().requires_grad_() for n in names}
    noise = {n: regularizer.noise[n].clone() for n in names}
    for name in names:  # the forward sees theta * z
        assert torch.equal(pruner.params[name].detach(), theta[name].detach() * sample_gates(log_alpha[name].detach(), noise[name]))

    x, y = batches[2]
    weights = {n: theta[n] * sample_gates(log_alpha[n], noise[n]) for n in names}
    loss = F.cross_entropy(functional_call(model, weights, (x,)), y) + 1e-2 * sum(expected_l0(a).sum() for a in log_alpha.values())
    loss.backward()

    seen = {}

    def capture(optimizer, args, kwargs):
        seen.update({n: (pruner.params[n].grad.clone(), pruner.params[n].detach().clone(), regularizer.log_alpha[n].grad.clone()) for n in names})

    handle = optimizer.register_step_pre_hook(capture)  # runs after the pruner's own pre-step hook
    train(model, optimizer, pruner, batches, start=2)
    handle.remove()
    for name in names:
        grad, value, gate_grad = seen[name]
        torch.testing.assert_close(grad, theta[name].grad)
        torch.testing.assert_close(gate_grad, log_alpha[name].grad)
        assert torch.equal(value, theta[name].detach())  # the optimizer steps the dense weights


def test_finalize_folds_deterministic_gates_and_masks_match_the_zeros():
    model, optimizer, pruner = make_run(1e-3)
    train(model, optimizer, pruner, make_batches())
    regularizer = pruner.stage("regularizer").regularizer
    expected = {n: regularizer.shadow.dense[n] * deterministic_gates(regularizer.log_alpha[n].detach()) for n in pruner.params}
    masks = {name: pruner.masks[name].clone() for name in pruner.masks}
    pruner.finalize()
    for name, param in pruner.params.items():
        assert torch.equal(param.detach(), expected[name] * masks[name])
        assert torch.equal(param.detach() != 0, pruner.masks[name])
        assert torch.equal(pruner.masks[name], masks[name])  # closed gates were already pruned during training
    assert pruner.summary().sparsity == pytest.approx(pruner.masks.sparsity())


def test_resume_from_checkpoint_is_bit_exact():
    batches = make_batches(30)
    model_a, optimizer_a, pruner_a = make_run(1e-3)
    train(model_a, optimizer_a, pruner_a, batches, stop=12)
    state = copy.deepcopy({"model": model_a.state_dict(), "optimizer": optimizer_a.state_dict(), "pruner": pruner_a.state_dict()})
    train(model_a, optimizer_a, pruner_a, batches, start=12)

    model_b, optimizer_b, pruner_b = make_run(1e-3)
    pruner_b.load_state_dict(state["pruner"])
    model_b.load_state_dict(state["model"])
    optimizer_b.load_state_dict(state["optimizer"])
    train(model_b, optimizer_b, pruner_b, batches, start=12)
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.equal(a, b), name
    for name in pruner_a.params:
        assert torch.equal(pruner_a.stage("regularizer").regularizer.log_alpha[name], pruner_b.stage("regularizer").regularizer.log_alpha[name])
        assert torch.equal(pruner_a.masks[name], pruner_b.masks[name])


def test_l0_recipe_and_bad_values():
    recipe = methods.l0_sparsity(1e-3, droprate_init=0.2)
    assert recipe.regularizer.type == "l0" and recipe.regularizer.droprate_init == 0.2
    with pytest.raises(ConfigError, match="droprate_init"):
        Recipe.from_dict({"regularizer": {"type": "l0", "strength": 1e-3, "droprate_init": 1.0}})
    with pytest.raises(ConfigError, match="decides the masks itself"):
        Recipe.from_dict({"regularizer": {"type": "l0", "strength": 1e-3}, "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5}}})
