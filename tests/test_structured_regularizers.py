"""Structured regularizers (group lasso, BN-scale L1, growing) and gradient-based group importance
(Taylor, Fisher): values against hand computations, NaN-safety, groups rebuilt after removal,
exact resume, recipe validation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.models import build_model
from pruneaware.criteria.channel import normalized
from pruneaware.regularizers.channel import GroupLasso, adaptive_weights, safe_norm

torch.set_num_threads(1)
_DATA = torch.Generator().manual_seed(0)
X = torch.randn(32, 3, 8, 8, generator=_DATA)
Y = (X.mean((2, 3)) @ torch.randn(3, 10, generator=_DATA)).argmax(1)  # learnable: channels matter unequally


class Tiny(nn.Module):
    """conv1 -> bn1 -> relu -> conv2 -> bn2 -> relu -> mean -> head (the head keeps its outputs)."""

    def __init__(self, width: int = 6, groups: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 8, 3, padding=1, groups=groups)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean((2, 3)))


def tiny(**options: int) -> Tiny:
    torch.manual_seed(0)
    model = Tiny(**options)
    with torch.no_grad():  # norms start away from BatchNorm's defaults, so every channel differs
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model


def recipe(schedule: dict | None = None, **structured: object) -> pa.Recipe:
    schedule = schedule or {"type": "one_shot", "sparsity": 0.3, "at": 50, "unit": "step"}
    return pa.Recipe.from_dict({"structured": {"schedule": schedule, **structured}})


def train(model: nn.Module, optimizer: torch.optim.Optimizer, pruner: pa.Pruner, steps: int) -> None:
    for _ in range(steps):
        loss = F.cross_entropy(model(X), Y) + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def conv1_group_squares(model: Tiny) -> torch.Tensor:
    """Per conv1 channel, the sum of squares of everything coupled to it (written out by hand)."""
    conv2 = model.conv2.weight
    if model.conv2.groups == 1:
        columns = conv2.square().sum((0, 2, 3))
    else:  # input channel c feeds column c % per_group of the filters of group c // per_group
        per_group, out_per_group = conv2.shape[1], conv2.shape[0] // model.conv2.groups
        first = [(c // per_group) * out_per_group for c in range(model.conv1.out_channels)]
        columns = torch.stack([conv2[f : f + out_per_group, c % per_group].square().sum() for c, f in enumerate(first)])
    own = model.conv1.weight.square().sum((1, 2, 3)) + model.conv1.bias.square()
    return own + model.bn1.weight.square() + model.bn1.bias.square() + columns


def conv2_group_squares(model: Tiny) -> torch.Tensor:
    own = model.conv2.weight.square().sum((1, 2, 3)) + model.conv2.bias.square()
    return own + model.bn2.weight.square() + model.bn2.bias.square() + model.head.weight.square().sum(0)


# -- values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2], ids=["dense-conv", "grouped-conv"])
def test_group_lasso_equals_a_hand_computation(groups: int) -> None:
    model = tiny(groups=groups)
    chosen = recipe(regularizer={"type": "group_lasso", "strength": 0.1})
    pruner = pa.Pruner(model, None, chosen, total_steps=60, example_inputs=X[:2])
    by_hand = sorted([conv1_group_squares(model).sqrt(), conv2_group_squares(model).sqrt()], key=len)
    assert torch.allclose(pruner.penalty(), 0.1 * sum(norms.sum() for norms in by_hand), rtol=1e-5)
    for ours, theirs in zip(sorted(pruner.channel_regularizer.norms(), key=len), by_hand):
        assert torch.allclose(ours, theirs.detach(), rtol=1e-5)


def test_adaptive_group_lasso_weights_the_weakest_channel_alpha_times() -> None:
    model = tiny()
    chosen = recipe(regularizer={"type": "group_lasso", "strength": 0.1, "alpha": 4})
    pruner = pa.Pruner(model, None, chosen, total_steps=60, example_inputs=X[:2])
    expected = 0.0
    for squares in (conv1_group_squares(model), conv2_group_squares(model)):
        norms = squares.sqrt()
        weights = 4.0 ** ((norms.max() - norms) / (norms.max() - norms.min()))
        expected = expected + (weights * norms).sum()
    assert torch.allclose(pruner.penalty(), 0.1 * expected, rtol=1e-5)


def test_bn_scale_penalty_is_strength_times_sum_of_absolute_scales() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 16, 16), 10)
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batchnorms:
            bn.weight.uniform_(-1.0, 1.0)
    chosen = recipe(regularizer={"type": "bn_scale", "strength": 1e-3})
    pruner = pa.Pruner(model, None, chosen, total_steps=60, example_inputs=torch.randn(2, 3, 16, 16))
    expected = 1e-3 * sum(bn.weight.abs().sum() for bn in batchnorms)
    assert torch.allclose(pruner.penalty(), expected, rtol=1e-5)
    assert len(pruner.channel_regularizer.batchnorms()) == len(batchnorms)


def test_group_lasso_zeroes_whole_weak_groups_where_weight_decay_only_scales() -> None:
    def run(weight_decay: float, regularizer: dict | None) -> torch.Tensor:
        model = tiny()
        with torch.no_grad():  # conv1's channels from weak to strong, each whole coupled group scaled
            scale = torch.linspace(0.1, 1.0, 6)
            for tensor in (model.conv1.bias, model.bn1.weight, model.bn1.bias):
                tensor.mul_(scale)
            model.conv1.weight.mul_(scale.view(-1, 1, 1, 1))
            model.conv2.weight.mul_(scale.view(1, -1, 1, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=weight_decay)
        extra = {"regularizer": regularizer} if regularizer else {}
        schedule = {"type": "one_shot", "sparsity": 0.3, "at": 90, "unit": "step"}  # after this run
        pruner = pa.Pruner(model, optimizer, recipe(schedule, **extra), total_steps=100, example_inputs=X[:2])
        train(model, optimizer, pruner, 80)
        return conv1_group_squares(model).detach().sqrt()

    lasso = run(0.0, {"type": "group_lasso", "strength": 0.05})
    decay = run(0.1, None)
    assert decay.sum() <= lasso.sum(), "weight decay should shrink at least as much overall for a fair comparison"
    assert lasso.min() < 0.02, f"the weakest group was not driven to zero: {lasso}"
    assert decay.min() > 0.1, f"weight decay zeroed a group: {decay}"
    assert lasso.min() / lasso.max() < 0.25 * (decay.min() / decay.max())


# -- NaN-safety --------------------------------------------------------------------------------------


def test_normalisations_are_nan_free_for_equal_zero_and_single_scores() -> None:
    ids = torch.tensor([0, 0, 0, 1])
    for norms in (torch.full((4,), 0.7), torch.zeros(4), torch.tensor([0.3, 0.3, 0.3, 5.0])):
        weights = adaptive_weights(norms, ids, 2, alpha=4.0)
        assert torch.isfinite(weights).all()
        assert torch.equal(weights[:3], torch.ones(3)), "equal norms in a group: no adaptation, not 0/0"
        assert weights[3] == 1.0, "a one-channel group has no spread"
    assert torch.equal(normalized(torch.zeros(5)), torch.zeros(5))
    assert torch.allclose(normalized(torch.tensor([1.0, 3.0])), torch.tensor([0.5, 1.5]))
    squares = torch.zeros(3, requires_grad=True)
    safe_norm(squares).sum().backward()
    assert torch.equal(squares.grad, torch.zeros(3)), "the norm's gradient at zero must be 0, not NaN"


@pytest.mark.parametrize("fill", [0.0, 0.5], ids=["all-zero", "all-equal"])
@pytest.mark.parametrize(
    "regularizer", [{"type": "group_lasso", "alpha": 4.0}, {"type": "growing"}, {"type": "bn_scale"}], ids=lambda r: r["type"]
)
def test_penalties_and_gradients_stay_finite_on_degenerate_weights(fill: float, regularizer: dict) -> None:
    model = tiny(width=1)  # conv1's group has a single channel
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(fill)
    schedule = {"type": "one_shot", "sparsity": 0.3, "at": 5, "unit": "step"}
    pruner = pa.Pruner(model, None, recipe(schedule, regularizer={"strength": 0.1, **regularizer}), total_steps=10, example_inputs=X[:2])
    penalty = pruner.penalty()
    assert torch.isfinite(torch.as_tensor(penalty))
    if isinstance(penalty, torch.Tensor) and penalty.requires_grad:
        penalty.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fisher_scores_stay_finite_when_every_gradient_is_zero() -> None:
    model = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    schedule = {"type": "one_shot", "sparsity": 0.3, "at": 1, "unit": "step"}
    pruner = pa.Pruner(model, optimizer, recipe(schedule, importance="fisher"), total_steps=2, example_inputs=X[:2])
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    pruner.channels.observe()
    graph, ranker = pruner.channels.ranker.DG, pruner.channels.ranker
    for module in (model.conv1, model.conv2):
        group = graph.get_pruning_group(module, graph.get_pruner_of_module(module).prune_out_channels, list(range(module.out_channels)))
        assert torch.equal(ranker.estimate_importance(group), torch.zeros(module.out_channels)), "0 / 0 must not become NaN"
    optimizer.step()  # the removal ranks these all-zero scores without failing
    assert pruner.step_count == 1 and all(torch.isfinite(p).all() for p in model.parameters())


# -- staleness after removal -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["group_lasso", "bn_scale", "growing"])
def test_regularizer_follows_the_new_parameters_after_a_removal(kind: str) -> None:
    schedule = {"type": "linear", "final": 0.4, "begin": 2, "end": 6, "every": 2, "unit": "step"}  # removals at 4 and 6
    chosen = recipe(schedule, regularizer={"type": kind, "strength": 0.01})
    model = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = pa.Pruner(model, optimizer, chosen, total_steps=10, example_inputs=X[:2])
    train(model, optimizer, pruner, 3)
    before = float(pruner.penalty().detach())
    old = list(model.parameters())
    train(model, optimizer, pruner, 1)  # removal at step 4, inside this optimizer.step()
    assert model.conv1.out_channels + model.conv2.out_channels < 14, "no channels were removed"

    penalty = pruner.penalty()  # no shape error: the groups were rebuilt on the new parameters
    for param in model.parameters():
        param.grad = None
    penalty.backward()
    current = list(model.parameters())
    replaced = [p for p in current if not any(p is q for q in old)]
    gone = [q for q in old if not any(q is p for p in current)]
    assert replaced and any(p.grad is not None for p in replaced), "the penalty does not reach the new parameters"
    assert all(q.grad is None for q in gone), "the penalty still refers to replaced parameters"
    if kind == "group_lasso":
        assert all(p.grad is not None for p in replaced)
    if kind == "bn_scale":
        assert all(bn.weight.grad is not None for bn in (model.bn1, model.bn2))
    assert float(penalty.detach()) != pytest.approx(before, rel=1e-3)
    if kind != "growing":  # the same slim model with a regularizer built from scratch agrees
        fresh = pa.Pruner(copy.deepcopy(model), None, chosen, total_steps=10, example_inputs=X[:2])
        assert float(penalty.detach()) == pytest.approx(float(fresh.penalty().detach()), rel=1e-5)


# -- growing regularization ----------------------------------------------------------------------------


def test_growing_penalises_exactly_the_channels_the_next_update_removes() -> None:
    model = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    schedule = {"type": "one_shot", "sparsity": 0.3, "at": 4, "unit": "step"}
    chosen = recipe(schedule, regularizer={"type": "growing", "strength": 0.1})
    pruner = pa.Pruner(model, optimizer, chosen, total_steps=6, example_inputs=X[:2])
    growing = pruner.channel_regularizer
    assert [growing.growth(step) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 0.0, 0.0]
    train(model, optimizer, pruner, 3)
    optimizer.zero_grad()
    pruner.penalty().backward()  # the penalty alone, at step 3 (the last before the removal)
    targeted = {  # a channel's own norm scale gets a gradient only when that channel is penalised
        "conv1": model.bn1.weight.grad.nonzero().flatten().tolist(),
        "conv2": model.bn2.weight.grad.nonzero().flatten().tolist(),
    }
    train(model, optimizer, pruner, 1)
    removed = {name: sorted(indices) for name, out, indices in pruner.channels.state_dict()["history"] if out}
    assert removed and {name: removed.get(name, []) for name in targeted} == targeted
    assert pruner.penalty() == 0.0, "no update left: no penalty"


# -- gradient-based importance ------------------------------------------------------------------------


@pytest.mark.parametrize("importance", ["fisher", "hessian", "taylor"])
def test_a_dead_channel_ranks_lowest_and_is_removed(importance: str) -> None:
    model = tiny()
    with torch.no_grad():  # channel 2 of conv1 and everything coupled to it: zero weights, hence zero gradients
        for tensor in (model.conv1.weight[2], model.conv1.bias[2:3], model.bn1.weight[2:3], model.bn1.bias[2:3], model.conv2.weight[:, 2]):
            tensor.zero_()
    survivors = torch.cat([model.conv1.weight[:2], model.conv1.weight[3:]]).detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    schedule = {"type": "one_shot", "sparsity": 0.05, "at": 3, "unit": "step"}  # one channel of 14
    pruner = pa.Pruner(model, optimizer, recipe(schedule, importance=importance), total_steps=4, example_inputs=X[:2])
    train(model, optimizer, pruner, 2)
    graph, ranker = pruner.channels.ranker.DG, pruner.channels.ranker
    handler = graph.get_pruner_of_module(model.conv1).prune_out_channels
    scores = ranker.estimate_importance(graph.get_pruning_group(model.conv1, handler, list(range(6))))
    assert scores[2] == 0 and (scores[[0, 1, 3, 4, 5]] > 0).all()
    train(model, optimizer, pruner, 1)
    assert model.conv1.out_channels == 5 and model.conv2.out_channels == 8
    assert torch.allclose(model.conv1.weight, survivors, atol=0.1), "a live channel was removed"


def test_taylor_scores_from_gradients_seen_before_the_step_and_tolerates_frozen_layers() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 16, 16), 10)
    model.stages[0][0].conv1.weight.requires_grad_(False)  # no gradient, ever
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    schedule = {"type": "linear", "final": 0.4, "begin": 1, "end": 3, "every": 2, "unit": "step"}  # removals at 1 and 3
    pruner = pa.Pruner(model, optimizer, recipe(schedule, importance="taylor"), total_steps=4, example_inputs=torch.randn(2, 3, 16, 16))
    scorer = pruner.channels.ranker.importance
    inputs, targets = torch.randn(8, 3, 16, 16), torch.arange(8)
    for step in range(4):
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        assert scorer.steps == (0 if step + 1 in (1, 3) else 1), "window: the steps since the last removal"
    assert model.stem[0].out_channels < 16
    assert not model.stages[0][0].conv1.weight.requires_grad


def test_gradient_importance_before_any_step_names_the_problem() -> None:
    with pytest.raises(pa.UsageError, match="'fisher' scores from gradients"):
        chosen = recipe({"type": "one_shot", "sparsity": 0.3, "at": 0, "unit": "step"}, importance="fisher")
        pa.Pruner(tiny(), None, chosen, total_steps=2, example_inputs=X[:2])


def test_gradient_statistics_and_growing_targets_resume_exactly() -> None:
    schedule = {"type": "linear", "final": 0.5, "begin": 1, "end": 9, "every": 4, "unit": "step"}  # updates at 1, 5, 9
    chosen = recipe(schedule, importance="fisher", regularizer={"type": "growing", "strength": 0.01})

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, pa.Pruner]:
        model = tiny()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        return model, optimizer, pa.Pruner(model, optimizer, chosen, total_steps=12, example_inputs=X[:2])

    model, optimizer, pruner = fresh()
    train(model, optimizer, pruner, 4)  # mid-interval: 3 steps of statistics, targets ranked at step 2
    saved = copy.deepcopy({"pruner": pruner.state_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict()})
    structure = saved["pruner"]["stages"]["channels"]
    assert structure["gradients"]["steps"] == 3 and structure["preview"] is not None
    train(model, optimizer, pruner, 4)  # crosses the removal at step 5

    resumed_model, resumed_optimizer, resumed = fresh()
    resumed.load_state_dict(saved["pruner"])
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    restored = resumed.channels.state_dict()
    assert restored["preview"] == structure["preview"]
    assert restored["gradients"]["sums"].keys() == structure["gradients"]["sums"].keys()
    assert all(torch.equal(restored["gradients"]["sums"][name], total) for name, total in structure["gradients"]["sums"].items())
    train(resumed_model, resumed_optimizer, resumed, 4)
    for (name, ours), (_, theirs) in zip(model.named_parameters(), resumed_model.named_parameters()):
        assert torch.equal(ours, theirs), name
    assert resumed.channels.state_dict()["history"] == pruner.channels.state_dict()["history"]


# -- recipes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regularizer", "field", "fragment"),
    [
        ({"type": "l1_groups", "strength": 0.1}, "recipe.structured.regularizer.type", "'group_lasso', 'bn_scale' or 'growing'"),
        ({"type": "group_lasso", "strength": -1.0}, "recipe.structured.regularizer.strength", "greater than 0"),
        ({"type": "group_lasso", "strength": 0.1, "alpha": 0.5}, "recipe.structured.regularizer.alpha", "greater than or equal to 1"),
        ({"type": "bn_scale", "strength": 0.1, "alpha": 4}, "recipe.structured.regularizer", "'alpha' only with type: group_lasso"),
        ({"type": "growing", "strenght": 0.1}, "recipe.structured.regularizer", ""),
    ],
)
def test_recipe_validation_names_field_value_and_choices(regularizer: dict, field: str, fragment: str) -> None:
    with pytest.raises(pa.ConfigError) as caught:
        recipe(regularizer=regularizer)
    assert caught.value.field.startswith(field)
    assert fragment in caught.value.expected


def test_recipe_accepts_the_new_importances_and_round_trips() -> None:
    for name in ("fisher", "hessian", "taylor"):
        assert recipe(importance=name).structured.importance == name
    with pytest.raises(pa.ConfigError, match="fisher"):
        recipe(importance="curvature")
    chosen = recipe(regularizer={"type": "group_lasso", "strength": 1e-4, "alpha": 4})
    assert pa.Recipe.from_dict(chosen.to_dict()) == chosen
    assert chosen.structured.regularizer.alpha == 4


def test_a_structured_regularizer_is_built_only_when_asked_for() -> None:
    pruner = pa.Pruner(tiny(), None, recipe(), total_steps=60, example_inputs=X[:2])
    assert pruner.channel_regularizer is None and pruner.penalty() == 0.0
    chosen = recipe(regularizer={"type": "group_lasso", "strength": 0.1})
    pruner = pa.Pruner(tiny(), None, chosen, total_steps=60, example_inputs=X[:2])
    assert isinstance(pruner.channel_regularizer, GroupLasso)
