"""Hessian-based element criteria: Fisher-diagonal and Hutchinson OBD saliency on quadratics with a known Hessian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneaware import Pruner, Recipe, methods
from pruneaware.criteria import CRITERIA, Fisher
from pruneaware.criteria.probing import OBD, Calibration

CURVATURE = torch.tensor([4.0, 1.0, 0.25, 9.0, 0.5, 2.0])
"""The Hessian diagonal H_ii of the toy quadratics below."""
WEIGHTS = torch.tensor([0.5, 2.0, 3.0, 0.2, 1.0, 0.8])
"""Saliency 0.5 * H_ii * w_i^2 ranks these 1 > 2 > 5 > 0 > 4 > 3; magnitude ranks them 2 > 1 > 4 > 5 > 0 > 3."""
SALIENCY = 0.5 * CURVATURE * WEIGHTS.square()


def half_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (output - target).square().mean()


def regression_model() -> nn.Linear:
    model = nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(WEIGHTS[None])
    return model


def noisy_samples(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """x_i ~ N(0, H_ii), y = x . w + N(0, 1): at w the per-sample gradient is -noise * x, so E[g_i^2] = H_ii."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 6, generator=generator) * CURVATURE.sqrt()
    y = x @ WEIGHTS + torch.randn(count, generator=generator)
    return [(x[i : i + 1], y[i : i + 1, None]) for i in range(count)]


def test_fisher_is_registered_and_scores_half_mean_squared_gradient_times_weight_squared():
    assert isinstance(CRITERIA.build("fisher"), Fisher) and CRITERIA.build("fisher").needs_gradients
    param = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    criterion = Fisher()
    for grad in ([1.0, 0.0, 2.0], [3.0, 1.0, 0.0]):
        param.grad = torch.tensor(grad)
        criterion.observe({"w": param})
    torch.testing.assert_close(criterion.score("w", param), 0.5 * torch.tensor([5.0, 0.5, 2.0]) * torch.tensor([1.0, 4.0, 9.0]))
    state = criterion.state_dict()
    restored = Fisher()
    restored.load_state_dict(state)
    assert restored.steps == 2 and torch.equal(restored.score("w", param), criterion.score("w", param))
    criterion.after_prune()  # a new window starts
    assert criterion.steps == 0 and criterion.buffers == {}


def test_fisher_ranks_by_the_true_hessian_saliency_on_a_quadratic():
    model = regression_model()
    criterion = Fisher()
    for x, y in noisy_samples(4000):
        model.zero_grad()
        half_squared_error(model(x), y).backward()
        criterion.observe({"weight": model.weight})
    fisher = criterion.accumulated("weight")[0] / criterion.steps
    torch.testing.assert_close(fisher, CURVATURE, rtol=0.15, atol=0)
    score = criterion.score("weight", model.weight)[0]
    assert torch.argsort(score, descending=True).tolist() == torch.argsort(SALIENCY, descending=True).tolist() == [1, 2, 5, 0, 4, 3]


def test_fisher_pruning_keeps_the_salient_weights_and_checkpoints_its_window():
    model = regression_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay at the point whose Hessian is known
    recipe = Recipe.from_dict(
        {"pruning": {"criterion": "fisher", "schedule": {"type": "one_shot", "sparsity": 0.5, "at": 1500, "unit": "step"}}, "scope": {"skip_last": False}}
    )
    pruner = Pruner(model, optimizer, recipe, total_steps=1500)
    for step, (x, y) in enumerate(noisy_samples(1500, seed=1)):
        optimizer.zero_grad()
        half_squared_error(model(x), y).backward()
        optimizer.step()
        if step == 10:
            state = pruner.state_dict()["stages"]["prune"]["criterion"]
            assert state["steps"] == 11 and state["buffers"]["weight"].shape == (1, 6)
    assert pruner.masks["weight"][0].tolist() == [False, True, True, False, False, True]  # magnitude would keep 1, 2, 4


def test_obd_recovers_the_exact_hessian_diagonal_when_it_is_diagonal():
    # Orthogonal design: x_k = sqrt(6 H_kk) e_k, so the mean-loss Hessian is exactly diag(H) and v * Hv = H for any signs v.
    model = regression_model()
    x = torch.diag((6 * CURVATURE).sqrt())
    criterion = OBD(samples=3)
    criterion.calibrate(model, {"weight": model.weight}, Calibration([(x, torch.zeros(6, 1))], half_squared_error))
    torch.testing.assert_close(criterion.score("weight", model.weight)[0], SALIENCY)


def test_obd_prunes_at_initialization_by_hessian_saliency():
    model = regression_model()
    x = torch.diag((6 * CURVATURE).sqrt())
    recipe = methods.one_shot(0.5, at=0, unit="step", criterion="obd", scope={"skip_last": False})
    pruner = Pruner(model, None, recipe, total_steps=1, calibration_data=[(x, torch.zeros(6, 1))], loss_fn=half_squared_error)
    assert pruner.masks["weight"][0].tolist() == [False, True, True, False, False, True]
    assert set(pruner.state_dict()["stages"]["prune"]["criterion"]) == {"generator"}


def test_obd_averages_hutchinson_samples_toward_the_diagonal_of_a_full_hessian():
    torch.manual_seed(0)
    model = regression_model()
    x = torch.randn(64, 6) * CURVATURE.sqrt()
    hessian_diagonal = (x.square()).mean(0)  # of 0.5 * mean((x . w - y)^2), off-diagonal terms nonzero
    criterion = OBD(samples=400, seed=3)
    criterion.calibrate(model, {"weight": model.weight}, Calibration([(x, torch.zeros(64, 1))], half_squared_error))
    estimate = criterion.score("weight", model.weight)[0] / (0.5 * WEIGHTS.square())
    torch.testing.assert_close(estimate, hessian_diagonal, rtol=0.2, atol=0.05)
