"""Importance criteria: registry, closed forms, accumulation windows and checkpointed state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneaware.criteria import CRITERIA, Criterion, Magnitude, Movement, Random, Taylor
from pruneaware.core.errors import ConfigError, UsageError


def make_params(seed: int = 0) -> dict[str, nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "a.weight": nn.Parameter(torch.randn(4, 6, generator=generator)),
        "b.weight": nn.Parameter(torch.randn(3, 2, 3, generator=generator)),
    }


def set_grads(params: dict[str, nn.Parameter], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    grads = {}
    for name, param in params.items():
        param.grad = torch.randn(param.shape, generator=generator)
        grads[name] = param.grad.clone()
    return grads


def test_registry_lists_builtin_criteria():
    assert {"magnitude", "taylor", "movement", "random"} <= set(CRITERIA.names())
    assert CRITERIA.names() == sorted(CRITERIA.names())
    for name in ("magnitude", "taylor", "movement", "random"):
        assert name in CRITERIA
        assert isinstance(CRITERIA.build(name), Criterion)
    assert isinstance(CRITERIA.build("magnitude"), Magnitude)
    assert isinstance(CRITERIA.build("taylor"), Taylor)
    assert isinstance(CRITERIA.build("movement"), Movement)
    assert isinstance(CRITERIA.build("random", seed=3), Random)


def test_unknown_criterion_lists_choices():
    with pytest.raises(ConfigError) as error:
        CRITERIA.get("magnitud")
    message = str(error.value)
    assert "criterion" in message and "'magnitud'" in message
    for name in ("magnitude", "taylor", "movement", "random"):
        assert repr(name) in message
    with pytest.raises(ConfigError):
        CRITERIA.build("nope")


def test_gradient_needs_flags():
    assert not Magnitude.needs_gradients
    assert not Random.needs_gradients
    assert Taylor.needs_gradients and Movement.needs_gradients


def test_magnitude_is_absolute_value():
    params = make_params()
    criterion = Magnitude()
    for name, param in params.items():
        score = criterion.score(name, param)
        assert score.shape == param.shape
        assert torch.equal(score, param.detach().abs())
        assert not score.requires_grad


def test_taylor_accumulates_weight_times_gradient_and_resets_after_prune():
    params = make_params()
    criterion = Taylor()
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    for seed in range(3):
        grads = set_grads(params, seed)
        criterion.observe(params)
        for name, param in params.items():
            expected[name] += param.detach() * grads[name]
        with torch.no_grad():  # weights move between steps: each step uses that step's weights
            for param in params.values():
                param.mul_(0.9).add_(0.01)
    for name, param in params.items():
        assert torch.allclose(criterion.score(name, param), expected[name].abs(), atol=1e-6)
    criterion.after_prune()
    with pytest.raises(UsageError):
        criterion.score("a.weight", params["a.weight"])
    grads = set_grads(params, 10)
    criterion.observe(params)
    for name, param in params.items():
        assert torch.allclose(criterion.score(name, param), (param.detach() * grads[name]).abs())


def test_taylor_sums_signed_values_before_taking_the_magnitude():
    param = nn.Parameter(torch.tensor([2.0, 2.0]))
    criterion = Taylor()
    for grad in ([1.0, 1.0], [-1.0, 1.0]):
        param.grad = torch.tensor(grad)
        criterion.observe({"w": param})
    assert torch.equal(criterion.score("w", param), torch.tensor([0.0, 4.0]))


def test_movement_accumulates_negative_weight_times_gradient_and_never_resets():
    params = make_params(1)
    criterion = Movement()
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    for seed in range(4):
        grads = set_grads(params, seed)
        criterion.observe(params)
        for name, param in params.items():
            expected[name] -= param.detach() * grads[name]
        if seed == 1:
            criterion.after_prune()
    for name, param in params.items():
        assert torch.allclose(criterion.score(name, param), expected[name], atol=1e-6)


def test_movement_scores_weights_moving_away_from_zero_highest():
    param = nn.Parameter(torch.tensor([1.0, 1.0, -1.0]))
    param.grad = torch.tensor([-1.0, 1.0, 1.0])  # SGD moves: +, -, -  -> away, toward, away
    criterion = Movement()
    criterion.observe({"w": param})
    score = criterion.score("w", param)
    assert score[0] > score[1] and score[2] > score[1]


def test_observe_skips_parameters_without_gradients():
    params = make_params()
    params["a.weight"].grad = torch.ones_like(params["a.weight"])
    criterion = Taylor()
    criterion.observe(params)
    criterion.score("a.weight", params["a.weight"])
    with pytest.raises(UsageError):
        criterion.score("b.weight", params["b.weight"])


def test_observe_does_not_alias_gradients():
    params = make_params()
    set_grads(params, 0)
    criterion = Movement()
    criterion.observe(params)
    before = criterion.score("a.weight", params["a.weight"]).clone()
    params["a.weight"].grad.mul_(100)
    with torch.no_grad():
        params["a.weight"].mul_(100)
    assert torch.equal(criterion.score("a.weight", params["a.weight"]), before)


@pytest.mark.parametrize("cls", [Taylor, Movement])
def test_gradient_criterion_before_observe_raises_helpful_usage_error(cls):
    params = make_params()
    with pytest.raises(UsageError) as error:
        cls().score("a.weight", params["a.weight"])
    message = str(error.value)
    assert "a.weight" in message
    assert cls.__name__.lower() in message
    assert "magnitude" in message and "step" in message


def test_random_is_reproducible_from_seed():
    param = torch.zeros(5, 7)
    a, b, c = Random(seed=3), Random(seed=3), Random(seed=4)
    first_a, first_b = a.score("w", param), b.score("w", param)
    assert torch.equal(first_a, first_b)
    assert not torch.equal(first_a, c.score("w", param))
    assert not torch.equal(first_a, a.score("w", param)), "successive calls draw new scores"
    assert first_a.shape == param.shape
    assert bool(((first_a >= 0) & (first_a < 1)).all())


def test_random_state_dict_round_trips():
    param = torch.zeros(6, 3)
    criterion = Random(seed=11)
    criterion.score("w", param)
    state = criterion.state_dict()
    expected = [criterion.score("w", param) for _ in range(2)]
    restored = Random(seed=999)
    restored.load_state_dict(state)
    assert torch.equal(restored.score("w", param), expected[0])
    assert torch.equal(restored.score("w", param), expected[1])


@pytest.mark.parametrize("cls", [Taylor, Movement])
def test_accumulating_state_dict_round_trips_and_is_a_copy(cls):
    params = make_params()
    criterion = cls()
    set_grads(params, 0)
    criterion.observe(params)
    state = criterion.state_dict()
    snapshot = {name: t.clone() for name, t in state["buffers"].items()}
    set_grads(params, 1)
    criterion.observe(params)  # must not modify the saved state
    for name in snapshot:
        assert torch.equal(state["buffers"][name], snapshot[name])
    restored = cls()
    restored.load_state_dict(state)
    for name, param in params.items():
        assert torch.equal(restored.score(name, param), _score_from(cls, snapshot[name]))
    set_grads(params, 1)
    restored.observe(params)
    for name, param in params.items():
        assert torch.allclose(restored.score(name, param), criterion.score(name, param))


def _score_from(cls, buffer: torch.Tensor) -> torch.Tensor:
    return buffer.abs() if cls is Taylor else buffer


def test_stateless_criteria_have_empty_state():
    assert Magnitude().state_dict() == {}
    Magnitude().load_state_dict({})


def test_input_magnitude_ranks_channels_by_the_weights_that_read_them() -> None:
    import torch_pruning as tp

    from pruneaware.criteria.channel import CHANNEL_CRITERIA

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with torch.no_grad():
        model[0].weight[2].mul_(100)  # a filter the BatchNorm behind it rescales anyway
        model[3].weight[:, 5].mul_(100)  # a channel the next layer reads heavily
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 10, 10))
    group = graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=list(range(8)))
    by_input = CHANNEL_CRITERIA.build("l2_input")(group)
    by_group = CHANNEL_CRITERIA.build("l2")(group)
    assert int(by_input.argmax()) == 5 and int(by_group.argmax()) == 2
    reader_norms = model[3].weight.detach().transpose(0, 1).flatten(1).norm(dim=1)
    assert torch.argsort(by_input).tolist() == torch.argsort(reader_norms).tolist()
