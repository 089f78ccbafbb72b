"""Pruning at initialization: SNIP, GraSP and iterative SynFlow score the model before the first step."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pruneaware import ConfigError, Pruner, Recipe, methods
from pruneaware.criteria.probing import SNIP, Calibration, GraSP, SynFlow
from pruneaware.schedules import geometric_targets


def at_step_zero(criterion: str, sparsity: float, skip_last: bool = True, **options) -> Recipe:
    schedule = {"type": "one_shot", "sparsity": sparsity, "at": 0, "unit": "step"}
    return Recipe.from_dict(
        {"pruning": {"criterion": criterion, "criterion_options": options, "schedule": schedule}, "scope": {"skip_last": skip_last}}
    )


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).square().mean()


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.bn(self.fc1(x))))))


def batch(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 12, generator=generator), torch.randint(0, 3, (size,), generator=generator)


# -- SNIP --------------------------------------------------------------------------------------------


def test_snip_keeps_the_largest_weight_times_gradient_not_the_largest_weights():
    # One linear neuron, one sample, squared error: g = 2 * r * x with r = w.x - y = 4, so
    # |g * w| = 8 * |x * w| = 8 * [1, 2, 0.2, 1.2]; magnitude would keep w[0] and w[2] instead.
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.5, -2.0, 0.12]]))
    x, y = torch.tensor([[1.0, 4.0, 0.1, 10.0]]), torch.zeros(1, 1)
    pruner = Pruner(model, None, at_step_zero("snip", 0.5, skip_last=False), total_steps=1, calibration_data=[(x, y)], loss_fn=mse)
    assert pruner.masks["weight"].tolist() == [[False, True, False, True]]
    assert torch.equal(model.weight.detach(), torch.tensor([[0.0, 0.5, 0.0, 0.12]]))


def test_snip_scores_are_weight_times_summed_gradient_and_the_model_is_left_as_found():
    torch.manual_seed(0)
    model = MLP()
    batches = [batch(1), batch(2)]
    expected_grads = [torch.zeros_like(model.fc1.weight), torch.zeros_like(model.fc2.weight)]
    probe = MLP()
    probe.load_state_dict(model.state_dict())
    for x, y in batches:
        for total, grad in zip(expected_grads, torch.autograd.grad(F.cross_entropy(probe(x), y), [probe.fc1.weight, probe.fc2.weight])):
            total.add_(grad)
    expected = {"fc1.weight": (model.fc1.weight * expected_grads[0]).abs(), "fc2.weight": (model.fc2.weight * expected_grads[1]).abs()}
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}

    criterion = SNIP(batches=2)
    params = {"fc1.weight": model.fc1.weight, "fc2.weight": model.fc2.weight}
    criterion.calibrate(model, params, Calibration(batches, F.cross_entropy))
    for name, param in params.items():
        torch.testing.assert_close(criterion.score(name, param), expected[name].detach())
    for name, tensor in model.state_dict().items():  # BatchNorm statistics too
        assert torch.equal(tensor, before[name]), name
    assert all(param.grad is None for param in model.parameters())


def test_snip_prunes_before_the_first_step_and_the_sparse_network_then_trains_fixed():
    torch.manual_seed(0)
    model = MLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    pruner = Pruner(model, optimizer, methods.snip(0.8), total_steps=10, calibration_data=[batch(1)], loss_fn=F.cross_entropy)
    masks = {name: pruner.masks[name].clone() for name in pruner.masks}
    assert pruner.step_count == 0 and abs(pruner.summary().sparsity - 0.8) < 1e-3
    for step in range(10):
        x, y = batch(10 + step)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, param in pruner.params.items():
        assert torch.equal(pruner.masks[name], masks[name])
        assert torch.equal(param != 0, masks[name])


def test_data_criteria_without_calibration_data_name_the_missing_argument():
    for criterion in ("snip", "grasp", "obd"):
        with pytest.raises(ConfigError, match="calibration_data"):
            Pruner(MLP(), None, at_step_zero(criterion, 0.5), total_steps=1)
    with pytest.raises(ConfigError, match="loss_fn"):
        Pruner(MLP(), None, at_step_zero("snip", 0.5), total_steps=1, calibration_data=[batch()])
    with pytest.raises(ConfigError, match="example_inputs"):
        Pruner(MLP(), None, at_step_zero("synflow", 0.5), total_steps=1)
    with pytest.raises(ConfigError, match="criterion_options.rounds"):
        Pruner(MLP(), None, at_step_zero("synflow", 0.5, rounds=0), total_steps=1, example_inputs=batch()[0])


# -- GraSP -------------------------------------------------------------------------------------------


def test_grasp_score_is_weight_times_hessian_gradient_product_by_finite_differences():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randn(8, 2, dtype=torch.float64)
    params = {"0.weight": model[0].weight, "2.weight": model[2].weight}
    criterion = GraSP()
    criterion.calibrate(model, params, Calibration([(x, y)], mse))

    def gradient() -> list[torch.Tensor]:
        return list(torch.autograd.grad(mse(model(x), y), list(params.values())))

    g = gradient()
    epsilon = 1e-5
    with torch.no_grad():
        for param, direction in zip(params.values(), g):
            param.add_(direction, alpha=epsilon)
    plus = gradient()
    with torch.no_grad():
        for param, direction in zip(params.values(), g):
            param.add_(direction, alpha=-2 * epsilon)
    minus = gradient()
    with torch.no_grad():
        for param, direction in zip(params.values(), g):
            param.add_(direction, alpha=epsilon)
    for (name, param), p, m in zip(params.items(), plus, minus):
        hessian_gradient = (p - m) / (2 * epsilon)
        torch.testing.assert_close(criterion.score(name, param), param.detach() * hessian_gradient, rtol=1e-6, atol=1e-9)


def test_grasp_prunes_at_initialization_to_the_target():
    torch.manual_seed(0)
    model = MLP()
    pruner = Pruner(model, None, methods.grasp(0.7), total_steps=1, calibration_data=[batch(1)], loss_fn=F.cross_entropy)
    assert abs(pruner.masks.sparsity() - 0.7) < 1e-3


# -- SynFlow -----------------------------------------------------------------------------------------


class Imbalanced(nn.Module):
    """A wide middle layer with tiny weights: global magnitude pruning empties it first."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 100)
        self.fc2 = nn.Linear(100, 100)
        self.fc3 = nn.Linear(100, 10)
        with torch.no_grad():
            self.fc2.weight.mul_(0.01)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def connected(masks: dict[str, torch.Tensor]) -> bool:
    """Whether any input reaches any output through kept weights (a path count through the masks)."""
    flow = torch.ones(10, dtype=torch.float64)
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        flow = masks[name].double() @ flow
    return bool(flow.sum() > 0)


def test_synflow_avoids_layer_collapse_where_magnitude_empties_a_layer():
    recipe_args = {"total_steps": 1, "example_inputs": torch.zeros(4, 10)}
    sparsity = 0.99  # 120 of 12,000 weights left; fc2 alone holds 10,000, all smaller than the rest
    torch.manual_seed(0)
    magnitude = Pruner(Imbalanced(), None, at_step_zero("magnitude", sparsity, skip_last=False), **recipe_args)
    assert magnitude.masks.kept("fc2.weight") == 0 and not connected(magnitude.masks.masks)

    torch.manual_seed(0)
    synflow = Pruner(Imbalanced(), None, at_step_zero("synflow", sparsity, skip_last=False), **recipe_args)
    assert abs(synflow.masks.sparsity() - sparsity) < 1e-3
    assert all(synflow.masks.kept(name) > 0 for name in synflow.masks)
    assert connected(synflow.masks.masks)

    torch.manual_seed(0)  # the rounds are what prevents it: scored once, SynFlow empties fc2 too
    single = Pruner(Imbalanced(), None, at_step_zero("synflow", sparsity, skip_last=False, rounds=1), **recipe_args)
    assert single.masks.kept("fc2.weight") == 0


def test_synflow_leaves_signs_dtype_mode_and_batchnorm_statistics_untouched():
    torch.manual_seed(0)
    model = MLP()
    model.bn.running_mean.uniform_(-1, 1)  # negative statistics would break a model left with absolute values
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    pruner = Pruner(model, None, methods.synflow(0.6, rounds=10), total_steps=1, example_inputs=batch()[0])
    assert model.training and all(param.dtype == torch.float32 for param in model.parameters())
    for name, tensor in model.state_dict().items():
        kept = pruner.masks[name] if name in pruner.masks.masks else torch.ones_like(tensor, dtype=torch.bool)
        assert torch.equal(tensor[kept], before[name][kept]), name  # kept weights keep their values and signs
    assert bool((model.fc1.weight < 0).any())


def test_synflow_scores_are_log_path_flows_computed_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].running_var.fill_(4.0)
        model[1].weight.uniform_(-2, 2)
        model[1].running_mean.uniform_(-1, 1)
    params = {"0.weight": model[0].weight, "2.weight": model[2].weight}
    criterion = SynFlow(rounds=1)
    criterion.calibrate(model, params, Calibration(example_inputs=torch.zeros(5, 3)))
    # By hand, biases and shifts dropped: R = sum_o sum_j |W2|_oj * |bn.w|_j / sqrt(4 + eps) * sum_i |W1|_ji.
    w1, w2 = model[0].weight.detach().double().abs(), model[2].weight.detach().double().abs()
    scale = model[1].weight.detach().double().abs() / torch.sqrt(torch.tensor(4.0 + model[1].eps, dtype=torch.float64))
    expected_w1 = w1 * (w2.sum(0) * scale)[:, None]
    expected_w2 = w2 * (scale * w1.sum(1))[None, :]
    torch.testing.assert_close(criterion.score("0.weight", model[0].weight), expected_w1.log())
    torch.testing.assert_close(criterion.score("2.weight", model[2].weight), expected_w2.log())


def test_geometric_targets_shrink_density_by_a_constant_factor():
    targets = geometric_targets(0.0, 0.99, 100)
    assert len(targets) == 100 and targets[-1] == 0.99
    densities = torch.tensor([1.0] + [1.0 - t for t in targets], dtype=torch.float64)
    ratios = densities[1:] / densities[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 0.01 ** (1 / 100)))
    assert geometric_targets(0.5, 0.9, 1) == [0.9] and geometric_targets(0.9, 0.5, 10) == [0.5]


def test_at_init_recipes_prune_at_step_zero():
    for recipe, criterion in ((methods.snip(0.9), "snip"), (methods.grasp(0.9), "grasp"), (methods.synflow(0.9, rounds=50), "synflow")):
        assert recipe.pruning.criterion == criterion
        assert recipe.pruning.schedule.type == "one_shot" and recipe.pruning.schedule.at == 0
        assert recipe.pruning.schedule.unit == "step"
    assert methods.synflow(0.9, rounds=50).pruning.criterion_options == {"rounds": 50}
