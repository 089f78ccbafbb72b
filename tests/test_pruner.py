"""The Pruner inside real (tiny) training loops: targets reached, masks enforced, state resumable."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_globals
from torch.nn.utils import parametrize

from tests.helpers import ThreeLayerMLP
from pruneaware import Pruner, Recipe
from pruneaware.core.errors import ConfigError, StateError, UsageError
from pruneaware.granularity import input_major
from pruneaware.methods import gradual_magnitude, l1_sparsity, one_shot

STEPS = 30


# Shapes are chosen so that 90% of every pruned layer is a whole number of 4x4 blocks and every
# input dimension is divisible by 4: each granularity can hit 0.9 (or 2:4) exactly.
def MLP() -> nn.Module:
    return ThreeLayerMLP((20, 32, 40, 4))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, (2, 5))
        self.conv2 = nn.Conv2d(8, 16, (2, 5))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


MODELS = {"mlp": (MLP, (8, 20)), "cnn": (CNN, (8, 4, 5, 12))}
PRUNED = {"mlp": ["fc1.weight", "fc2.weight"], "cnn": ["conv1.weight", "conv2.weight"]}


def make_model(kind: str = "mlp", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[kind][0]()


def make_batches(kind: str = "mlp", steps: int = STEPS, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    shape = MODELS[kind][1]
    return [(torch.randn(shape, generator=generator), torch.randint(0, 4, (shape[0],), generator=generator)) for _ in range(steps)]


def make_optimizer(model: nn.Module, name: str) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return torch.optim.Adam(model.parameters(), lr=0.01)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches,
    start: int = 0,
    stop: int | None = None,
    pruner: Pruner | None = None,
    after_step: Callable[[int], None] | None = None,
    explicit: Pruner | None = None,
) -> None:
    for step in range(start, len(batches) if stop is None else stop):
        x, y = batches[step]
        loss = nn.functional.cross_entropy(model(x), y)
        if pruner is not None:
            loss = loss + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        if explicit is not None:
            explicit.before_step()
        optimizer.step()
        if explicit is not None:
            explicit.step()
        if after_step is not None:
            after_step(step + 1)


def count_zeros(model: nn.Module, names: list[str]) -> tuple[int, int]:
    params = dict(model.named_parameters())
    zeros = sum(int((params[name] == 0).sum()) for name in names)
    return zeros, sum(params[name].numel() for name in names)


def gmp_recipe(granularity, final: float = 0.9, criterion: str = "magnitude", **schedule) -> Recipe:
    data = gradual_magnitude(final, begin=0.1, end=0.7, every=0.1).to_dict()
    data["pruning"]["granularity"] = granularity
    data["pruning"]["criterion"] = criterion
    data["pruning"]["schedule"].update(schedule)
    return Recipe.from_dict(data)


GRANULARITIES = {
    "element-layer": ({"type": "element", "scope": "layer"}, 0.9),
    "element-global": ({"type": "element", "scope": "global"}, 0.9),
    "block-1x4": ({"type": "block", "shape": [1, 4]}, 0.9),
    "block-4x4": ({"type": "block", "shape": [4, 4]}, 0.9),
    "block-4x4-global": ({"type": "block", "shape": [4, 4], "scope": "global"}, 0.9),
    "2:4": ("2:4", 0.5),
}


def assert_every_group_has(model: nn.Module, names: list[str], n: int, m: int = 4) -> None:
    params = dict(model.named_parameters())
    for name in names:
        groups = input_major(params[name].detach()).reshape(-1, m)
        assert bool(((groups != 0).sum(1) == n).all()), name


# -- reaching the target ---------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", list(GRANULARITIES))
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_gradual_pruning_reaches_target(kind, optimizer_name, granularity):
    spec, final = GRANULARITIES[granularity]
    model = make_model(kind)
    optimizer = make_optimizer(model, optimizer_name)
    pruner = Pruner(model, optimizer, gmp_recipe(spec, final), total_steps=STEPS)
    assert list(pruner.params) == PRUNED[kind]
    train(model, optimizer, make_batches(kind))
    summary = pruner.summary()
    zeros, numel = count_zeros(model, PRUNED[kind])
    assert summary.pruned_numel == numel
    assert abs(summary.sparsity - final) <= 1 / numel
    assert summary.sparsity == pytest.approx(zeros / numel)
    assert summary.pruned_nonzero == numel - zeros
    assert summary.target == pytest.approx(final)
    assert pruner.target_sparsity() == pytest.approx(final)
    head = model.head.weight
    assert bool((head != 0).all()), "the classifier stays dense"
    if granularity == "2:4":
        assert_every_group_has(model, PRUNED[kind], 2)
    for layer in summary.layers:
        assert layer.nonzero == int((dict(model.named_parameters())[layer.name] != 0).sum())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gradual_nm_goes_through_3_of_4():
    model = make_model("mlp")
    optimizer = make_optimizer(model, "sgd")
    recipe = gmp_recipe("2:4", 0.5, type="linear")  # targets 0, 0.1, ..., 0.5
    pruner = Pruner(model, optimizer, recipe, total_steps=STEPS)
    seen = set()

    def record(step):
        params = dict(model.named_parameters())
        counts = torch.cat([(input_major(params[n].detach()).reshape(-1, 4) != 0).sum(1) for n in PRUNED["mlp"]])
        assert counts.min() == counts.max(), "every group holds the same count at every step"
        seen.add(int(counts[0]))

    train(model, optimizer, make_batches("mlp"), after_step=record)
    assert seen == {4, 3, 2}
    assert pruner.summary().sparsity == 0.5


# -- enforcement ------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_masks_hold_after_every_step_although_the_optimizer_state_would_move_pruned_weights(optimizer_name):
    """Pruned gradients reach these elementwise optimizers (tests/test_pruned_gradients.py); the weights stay zero."""
    model = make_model("mlp")
    optimizer = make_optimizer(model, optimizer_name)
    pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "global"}), total_steps=STEPS)
    would_move = []

    def check_weights(step):
        for name, param in pruner.params.items():
            pruned = ~pruner.masks[name]
            assert bool((param[pruned] == 0).all()), f"pruned weight moved at step {step}"
            state = optimizer.state[param]
            buffer = state.get("momentum_buffer", state.get("exp_avg"))
            would_move.append(bool((buffer[pruned] != 0).any()))

    train(model, optimizer, make_batches("mlp"), after_step=check_weights)
    assert any(would_move), "the optimizer state would have moved pruned weights"
    assert pruner.summary().sparsity == pytest.approx(0.9, abs=1 / 1920)


def test_zeros_set_only_grows_and_masks_match_the_weights():
    for criterion in ("magnitude", "random"):
        model = make_model("cnn")
        optimizer = make_optimizer(model, "adam")
        pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "global"}, criterion=criterion), total_steps=STEPS)
        previous = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in pruner.params.items()}
        sparsities = []

        def check(step):
            for name, param in pruner.params.items():
                zeros = param.detach() == 0
                assert bool(zeros[previous[name]].all()), f"{criterion}: a pruned weight came back at step {step}"
                assert torch.equal(zeros, ~pruner.masks[name])
                previous[name] = zeros
            sparsities.append(pruner.summary().sparsity)

        train(model, optimizer, make_batches("cnn"), after_step=check)
        assert sparsities == sorted(sparsities)
        assert sparsities[-1] == pytest.approx(0.9, abs=1 / 1600)


def test_random_criterion_prunes_a_different_pattern_than_magnitude():
    patterns = {}
    for criterion in ("magnitude", "random"):
        model = make_model("mlp")
        optimizer = make_optimizer(model, "sgd")
        pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "layer"}, criterion=criterion), total_steps=STEPS)
        train(model, optimizer, make_batches("mlp"))
        patterns[criterion] = pruner.masks["fc1.weight"].clone()
        assert pruner.summary().sparsity == pytest.approx(0.9, abs=1 / 1920)
    assert not torch.equal(patterns["magnitude"], patterns["random"])


def test_forward_pass_has_no_hooks_or_parametrizations():
    model = make_model("cnn")
    optimizer = make_optimizer(model, "adam")
    pruner = Pruner(model, optimizer, gmp_recipe({"type": "block", "shape": [4, 4]}), total_steps=STEPS)

    def check(step):
        for module in model.modules():
            assert not module._forward_hooks and not module._forward_pre_hooks
            assert not module._backward_hooks and not module._backward_pre_hooks
            assert not parametrize.is_parametrized(module)
        for param in model.parameters():
            assert not param._backward_hooks
            assert param._post_accumulate_grad_hooks is None
            assert param.is_leaf and type(param) is nn.Parameter
        assert not module_globals._global_forward_hooks and not module_globals._global_forward_pre_hooks
        assert not module_globals._global_backward_hooks

    check(0)
    train(model, optimizer, make_batches("cnn"), after_step=check)
    assert type(model.conv1) is nn.Conv2d and type(model.conv1.weight) is nn.Parameter
    assert set(dict(model.named_parameters())) == {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "head.weight", "head.bias"}
    assert set(model.state_dict()) == set(dict(model.named_parameters())), "no mask buffers added to the model"
    assert pruner.summary().sparsity > 0.5


def test_model_can_be_copied_pickled_and_saved_mid_run():
    model = make_model("mlp")
    optimizer = make_optimizer(model, "adam")
    batches = make_batches("mlp")
    pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "global"}), total_steps=STEPS)
    train(model, optimizer, batches, stop=STEPS // 2)
    assert 0 < pruner.summary().sparsity < 0.9

    clone = copy.deepcopy(model)
    unpickled = pickle.loads(pickle.dumps(model))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = make_model("mlp", seed=5)
    loaded.load_state_dict(torch.load(buffer))
    x = batches[0][0]
    for other in (clone, unpickled, loaded):
        assert torch.equal(other(x), model(x))
        for (name, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
            assert torch.equal(a, b), name

    train(model, optimizer, batches, start=STEPS // 2)
    assert pruner.summary().sparsity == pytest.approx(0.9, abs=1 / 1920)
    assert 0 < sum(int((p == 0).sum()) for n, p in clone.named_parameters() if n in PRUNED["mlp"]) < 0.9 * 1920


def test_finalize_removes_optimizer_hooks_and_weights_can_regrow():
    model = make_model("mlp")
    optimizer = make_optimizer(model, "adam")
    batches = make_batches("mlp")
    pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "global"}), total_steps=STEPS)
    assert len(optimizer._optimizer_step_pre_hooks) == 1 and len(optimizer._optimizer_step_post_hooks) == 1
    train(model, optimizer, batches)
    step_count = pruner.step_count
    returned = pruner.finalize()
    assert returned is model
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    zeros_before = {name: (p == 0).clone() for name, p in pruner.params.items()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train(model, optimizer, batches, stop=5)
    assert pruner.step_count == step_count, "the pruner no longer advances"
    regrown = sum(int((p[zeros_before[n]] != 0).sum()) for n, p in pruner.params.items())
    assert regrown > 0, "without masks, dense training moves pruned weights again"
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    pruner.remove_hooks()  # idempotent


def test_already_sparse_model_continues_to_the_target_not_beyond():
    model = make_model("mlp")
    generator = torch.Generator().manual_seed(3)
    originally_zero = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in PRUNED["mlp"]:
                zero = torch.zeros(param.numel(), dtype=torch.bool)
                zero[torch.randperm(param.numel(), generator=generator)[: param.numel() // 2]] = True
                zero = zero.reshape(param.shape)
                param[zero] = 0
                originally_zero[name] = zero
    zeros, numel = count_zeros(model, PRUNED["mlp"])
    assert zeros == numel // 2
    optimizer = make_optimizer(model, "sgd")
    pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "global"}), total_steps=STEPS)
    assert pruner.summary().sparsity == pytest.approx(0.5)
    assert pruner.masks.sparsity() == pytest.approx(0.5)

    def check(step):
        for name, param in pruner.params.items():
            assert bool((param[originally_zero[name]] == 0).all())

    train(model, optimizer, make_batches("mlp"), after_step=check)
    assert abs(pruner.summary().sparsity - 0.9) <= 1 / numel


# -- checkpoint and resume --------------------------------------------------------------------------


def save(obj) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "movement", "random"])
@pytest.mark.parametrize("stop_at", [5, 9, 13, 21])  # 9 and 21 are update steps, 21 the last
def test_resume_from_checkpoint_is_bit_exact(criterion, stop_at):
    recipe = gmp_recipe({"type": "element", "scope": "global"}, criterion=criterion)
    batches = make_batches("mlp")

    model_a = make_model("mlp")
    optimizer_a = make_optimizer(model_a, "adam")
    pruner_a = Pruner(model_a, optimizer_a, recipe, total_steps=STEPS)
    train(model_a, optimizer_a, batches)

    model_b = make_model("mlp")
    optimizer_b = make_optimizer(model_b, "adam")
    pruner_b = Pruner(model_b, optimizer_b, recipe, total_steps=STEPS)
    train(model_b, optimizer_b, batches, stop=stop_at)
    checkpoint = save({"model": model_b.state_dict(), "optimizer": optimizer_b.state_dict(), "pruner": pruner_b.state_dict()})
    del model_b, optimizer_b, pruner_b

    state = torch.load(checkpoint)  # weights_only: the pruner state is plain tensors and containers
    model_c = make_model("mlp", seed=123)
    model_c.load_state_dict(state["model"])
    optimizer_c = make_optimizer(model_c, "adam")
    optimizer_c.load_state_dict(state["optimizer"])
    pruner_c = Pruner(model_c, optimizer_c, recipe, total_steps=STEPS)
    pruner_c.load_state_dict(state["pruner"])
    assert pruner_c.step_count == stop_at
    train(model_c, optimizer_c, batches, start=stop_at)

    for (name, a), (_, c) in zip(model_a.named_parameters(), model_c.named_parameters()):
        assert torch.equal(a, c), name
    for name in pruner_a.params:
        assert torch.equal(pruner_a.masks[name], pruner_c.masks[name])
    assert pruner_c.step_count == pruner_a.step_count == STEPS


def test_pruner_state_contents():
    model = make_model("mlp")
    optimizer = make_optimizer(model, "sgd")
    recipe = gmp_recipe({"type": "element", "scope": "global"}, criterion="taylor")
    pruner = Pruner(model, optimizer, recipe, total_steps=STEPS)
    train(model, optimizer, make_batches("mlp"), stop=4)
    state = pruner.state_dict()
    assert state["step"] == 4
    assert state["recipe"] == recipe.fingerprint()
    assert set(state["masks"]) == set(PRUNED["mlp"])
    assert state["format"] == 2 and set(state["stages"]) == {"prune"}
    assert set(state["stages"]["prune"]["criterion"]["buffers"]) == set(PRUNED["mlp"])


def test_loading_state_from_a_different_recipe_raises():
    model = make_model("mlp")
    optimizer = make_optimizer(model, "sgd")
    pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "global"}), total_steps=STEPS)
    train(model, optimizer, make_batches("mlp"), stop=5)
    state = pruner.state_dict()

    other_model = make_model("mlp")
    other_optimizer = make_optimizer(other_model, "sgd")
    other = Pruner(other_model, other_optimizer, gmp_recipe({"type": "element", "scope": "global"}, final=0.8), total_steps=STEPS)
    with pytest.raises(StateError) as error:
        other.load_state_dict(state)
    assert "recipe" in str(error.value)
    assert other.step_count == 0
    with pytest.raises(StateError):
        other.load_state_dict({**state, "format": 99})
    same = Pruner(make_model("mlp"), None, pruner.recipe, total_steps=STEPS)
    with pytest.raises(StateError):
        same.load_state_dict({**state, "masks": {"fc1.weight": state["masks"]["fc1.weight"]}})
    assert same.step_count == 0, "a rejected state leaves the pruner where it was"
    assert same.masks.sparsity() == 0.0
    same.load_state_dict(state)
    assert same.step_count == 5 and same.masks.sparsity() == pytest.approx(pruner.masks.sparsity())


# -- explicit mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["magnitude", "taylor"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_explicit_mode_matches_hooked_mode(criterion, optimizer_name):
    recipe = gmp_recipe({"type": "element", "scope": "global"}, criterion=criterion)
    batches = make_batches("cnn")
    hooked = make_model("cnn")
    hooked_optimizer = make_optimizer(hooked, optimizer_name)
    hooked_pruner = Pruner(hooked, hooked_optimizer, recipe, total_steps=STEPS)
    train(hooked, hooked_optimizer, batches)

    manual = make_model("cnn")
    manual_optimizer = make_optimizer(manual, optimizer_name)
    manual_pruner = Pruner(manual, None, recipe, total_steps=STEPS)
    assert not manual_optimizer._optimizer_step_pre_hooks and not manual_optimizer._optimizer_step_post_hooks
    train(manual, manual_optimizer, batches, explicit=manual_pruner)

    for (name, a), (_, b) in zip(hooked.named_parameters(), manual.named_parameters()):
        assert torch.equal(a, b), name
    assert manual_pruner.step_count == hooked_pruner.step_count == STEPS
    assert manual_pruner.summary().sparsity == hooked_pruner.summary().sparsity


def test_explicit_mode_proximal_regularizer_needs_the_optimizer():
    model = make_model("mlp")
    pruner = Pruner(model, None, l1_sparsity(0.1), total_steps=STEPS)
    with pytest.raises(UsageError) as error:
        pruner.step()
    assert "optimizer" in str(error.value)


# -- configuration errors at construction ---------------------------------------------------------


def test_schedule_ending_after_training_raises():
    recipe = gradual_magnitude(0.9, begin=0, end=50, every=5, unit="step")
    model = make_model("mlp")
    with pytest.raises(ConfigError) as error:
        Pruner(model, make_optimizer(model, "sgd"), recipe, total_steps=40)
    assert "pruning.schedule" in str(error.value) and "50" in str(error.value) and "40" in str(error.value)
    Pruner(model, make_optimizer(model, "sgd"), recipe, total_steps=50)  # ending on the last step is fine
    with pytest.raises(ConfigError):
        Pruner(make_model("mlp"), None, one_shot(0.5, at=11, unit="epoch"), steps_per_epoch=5, epochs=10)


def test_epoch_units_need_steps_per_epoch():
    recipe = gradual_magnitude(0.9, begin=1, end=3, unit="epoch")
    with pytest.raises(ConfigError) as error:
        Pruner(make_model("mlp"), None, recipe)
    assert "steps_per_epoch" in str(error.value) and "pruning.schedule." in str(error.value)
    pruner = Pruner(make_model("mlp"), None, recipe, steps_per_epoch=4)
    assert pruner.schedule.update_steps() == [4, 8, 12]


def test_fraction_units_need_the_training_length():
    recipe = gradual_magnitude(0.9)
    for kwargs in ({}, {"steps_per_epoch": 10}, {"epochs": 3}):
        with pytest.raises(ConfigError) as error:
            Pruner(make_model("mlp"), None, recipe, **kwargs)
        message = str(error.value)
        assert "steps_per_epoch" in message and "epochs" in message
    assert Pruner(make_model("mlp"), None, recipe, steps_per_epoch=10, epochs=3).length.total_steps == 30
    assert Pruner(make_model("mlp"), None, recipe, total_steps=30).schedule.last_step == 21


def test_non_integer_step_time_raises():
    with pytest.raises(ConfigError) as error:  # refused when the recipe is validated, before any Pruner
        gradual_magnitude(0.9, begin=2.5, end=10, unit="step")
    assert "pruning.schedule.begin" in str(error.value) and "2.5" in str(error.value)


@pytest.mark.parametrize("unit", ["step", "epoch", "fraction"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_times_raise_config_error(unit, value):
    with pytest.raises(ConfigError) as error:  # refused when the recipe is validated, before any Pruner
        gradual_magnitude(0.9, begin=value, end=10, unit=unit)
    assert "pruning.schedule.begin" in str(error.value)


def test_nm_on_an_indivisible_layer_raises_at_construction():
    model = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    recipe = gmp_recipe("2:4", 0.5)
    with pytest.raises(ConfigError) as error:
        Pruner(model, None, recipe, total_steps=STEPS)
    assert "'0.weight'" in str(error.value)
    excluded = Recipe.from_dict({**recipe.to_dict(), "scope": {"exclude": ["0"]}})
    assert list(Pruner(model, None, excluded, total_steps=STEPS).params) == ["1.weight"]


def test_parameters_missing_from_the_optimizer_raise():
    model = make_model("mlp")
    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)
    with pytest.raises(UsageError):
        Pruner(model, optimizer, gmp_recipe({"type": "element"}), total_steps=STEPS)


def test_recipe_as_dict_or_yaml_path(tmp_path):
    recipe = gmp_recipe({"type": "element", "scope": "layer"})
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml())
    for source in (recipe.to_dict(), str(path), path):
        assert Pruner(make_model("mlp"), None, source, total_steps=STEPS).recipe == recipe
    with pytest.raises(ConfigError):
        Pruner(make_model("mlp"), None, 42, total_steps=STEPS)  # type: ignore[arg-type]


# -- criteria and regularizers end to end -------------------------------------------------------


@pytest.mark.parametrize("criterion", ["taylor", "movement"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_gradient_criteria_reach_the_target(criterion, kind):
    model = make_model(kind)
    optimizer = make_optimizer(model, "adam")
    pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "global"}, criterion=criterion), total_steps=STEPS)
    train(model, optimizer, make_batches(kind))
    zeros, numel = count_zeros(model, PRUNED[kind])
    assert abs(pruner.summary().sparsity - 0.9) <= 1 / numel
    assert zeros / numel == pytest.approx(pruner.summary().sparsity)


def test_taylor_window_restarts_at_each_prune_and_movement_keeps_accumulating():
    for criterion in ("taylor", "movement"):
        model = make_model("mlp")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # weights fixed: statistics are easy to predict
        pruner = Pruner(model, optimizer, gmp_recipe({"type": "element"}, criterion=criterion), total_steps=STEPS)
        batches = make_batches("mlp")
        update_steps = pruner.schedule.update_steps()
        expected = {name: torch.zeros_like(p) for name, p in pruner.params.items()}

        def accumulate(opt, args, kwargs):  # sees the weights and gradients the criterion observed
            for name, param in pruner.params.items():
                sign = 1.0 if criterion == "taylor" else -1.0
                expected[name] += sign * param.detach() * param.grad

        optimizer.register_step_pre_hook(accumulate)

        def record(step):
            if criterion == "taylor" and step in update_steps:
                assert pruner.criterion.buffers == {}
                for name in expected:
                    expected[name].zero_()
            else:
                for name in expected:
                    assert torch.allclose(pruner.criterion.buffers[name], expected[name], atol=1e-6), (criterion, step)

        train(model, optimizer, batches, after_step=record)


def test_gradient_criterion_pruning_before_training_raises():
    recipe = one_shot(0.5, at=0, unit="step", criterion="taylor")
    with pytest.raises(UsageError) as error:
        Pruner(make_model("mlp"), None, recipe)
    assert "magnitude" in str(error.value)


def test_taylor_differs_from_magnitude():
    masks = {}
    for criterion in ("magnitude", "taylor"):
        model = make_model("mlp")
        optimizer = make_optimizer(model, "sgd")
        pruner = Pruner(model, optimizer, gmp_recipe({"type": "element", "scope": "global"}, criterion=criterion), total_steps=STEPS)
        train(model, optimizer, make_batches("mlp"))
        masks[criterion] = pruner.masks["fc2.weight"].clone()
    assert not torch.equal(masks["magnitude"], masks["taylor"])


def test_proximal_l1_produces_exact_zeros():
    model = make_model("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = Pruner(model, optimizer, l1_sparsity(0.5, proximal=True))
    assert pruner.penalty() == 0.0
    zeros_before, numel = count_zeros(model, PRUNED["mlp"])
    assert zeros_before == 0
    train(model, optimizer, make_batches("mlp"), stop=5, pruner=pruner)
    zeros, _ = count_zeros(model, PRUNED["mlp"])
    assert zeros > numel // 4
    assert pruner.summary().sparsity == pytest.approx(zeros / numel)
    assert bool((model.head.weight != 0).all()), "out of scope: not thresholded"
    assert pruner.target_sparsity() == 0.0


def test_l1_penalty_is_a_differentiable_loss_term():
    model = make_model("mlp")
    pruner = Pruner(model, None, l1_sparsity(0.01, proximal=False))
    penalty = pruner.penalty()
    assert isinstance(penalty, torch.Tensor) and penalty.requires_grad and penalty.dim() == 0
    expected = 0.01 * sum(model.get_parameter(n).abs().sum() for n in PRUNED["mlp"])
    assert penalty.item() > 0 and torch.allclose(penalty, expected)
    penalty.backward()
    for name in PRUNED["mlp"]:
        param = model.get_parameter(name)
        assert torch.allclose(param.grad, 0.01 * param.detach().sign())
    assert model.head.weight.grad is None


def test_penalty_is_zero_without_a_regularizer():
    model = make_model("mlp")
    pruner = Pruner(model, None, gmp_recipe({"type": "element"}), total_steps=STEPS)
    assert pruner.penalty() == 0.0
    assert pruner.regularizer is None


def test_l1_with_final_cut():
    model = make_model("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner = Pruner(model, optimizer, l1_sparsity(0.01, sparsity=0.8, at=0.5), total_steps=20)
    batches = make_batches("mlp", steps=20)
    train(model, optimizer, batches, stop=9, pruner=pruner)
    assert pruner.summary().sparsity < 0.8
    train(model, optimizer, batches, start=9, pruner=pruner)
    assert pruner.summary().sparsity >= 0.8 - 1 / 1920


# -- one-shot ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_one_shot_at_step_zero_prunes_at_construction(scope):
    model = make_model("mlp")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    schedule = {"type": "one_shot", "sparsity": 0.6, "at": 0, "unit": "step"}
    recipe = Recipe.from_dict({"pruning": {"schedule": schedule, "granularity": {"type": "element", "scope": scope}}})
    pruner = Pruner(model, None, recipe)
    assert pruner.step_count == 0
    assert pruner.target_sparsity() == 0.6
    zeros, numel = count_zeros(model, PRUNED["mlp"])
    assert zeros == round(0.6 * numel) or scope == "layer"
    assert abs(zeros / numel - 0.6) <= 1 / numel
    magnitudes = torch.cat([before[n][pruner.masks[n]].abs().flatten() for n in PRUNED["mlp"]])
    pruned = torch.cat([before[n][~pruner.masks[n]].abs().flatten() for n in PRUNED["mlp"]])
    if scope == "global":
        assert magnitudes.min() >= pruned.max()
    assert torch.equal(model.head.weight, before["head.weight"])


def test_one_shot_helper_at_step_zero():
    model = make_model("cnn")
    optimizer = make_optimizer(model, "sgd")
    pruner = Pruner(model, optimizer, one_shot(0.75, at=0, unit="step"), total_steps=STEPS)
    zeros, numel = count_zeros(model, PRUNED["cnn"])
    assert zeros == round(0.75 * numel)
    train(model, optimizer, make_batches("cnn"), stop=5)
    assert count_zeros(model, PRUNED["cnn"])[0] == zeros
    assert pruner.summary().sparsity == pytest.approx(0.75)


def test_one_shot_mid_training():
    model = make_model("mlp")
    optimizer = make_optimizer(model, "sgd")
    pruner = Pruner(model, optimizer, one_shot(0.5, at=0.5), total_steps=STEPS)
    sparsities = []
    train(model, optimizer, make_batches("mlp"), after_step=lambda step: sparsities.append(pruner.summary().sparsity))
    assert sparsities[: STEPS // 2 - 1] == [0.0] * (STEPS // 2 - 1)
    assert all(s == pytest.approx(0.5) for s in sparsities[STEPS // 2 - 1 :])


def test_explicit_step_on_a_hooked_pruner_is_refused() -> None:
    import pruneaware as pa

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = pa.Pruner(model, optimizer, pa.methods.one_shot(0.5, at=1, unit="step"), total_steps=4)
    with pytest.raises(pa.UsageError, match="advance it twice"):
        pruner.step()
    with pytest.raises(pa.UsageError, match="advance it twice"):
        pruner.before_step()
    assert pruner.step_count == 0
    pruner.remove_hooks()
    pruner.step()  # detached from the optimizer: driving it by hand is allowed again
    assert pruner.step_count == 1


def test_stepping_after_finalize_is_refused_and_prunes_nothing_more() -> None:
    import pruneaware as pa

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    pruner = pa.Pruner(model, None, pa.methods.gradual_magnitude(0.8, begin=1, end=4, every=1, unit="step"), total_steps=6)
    pruner.step()
    pruner.finalize()
    before = model[0].weight.detach().clone()
    for method in (pruner.step, pruner.before_step):
        with pytest.raises(pa.UsageError, match=r"after finalize\(\)"):
            method()
    assert pruner.step_count == 1 and torch.equal(model[0].weight, before)


def test_a_second_pruner_on_the_same_optimizer_is_refused_until_the_first_detaches() -> None:
    import pruneaware as pa

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first = pa.Pruner(model, optimizer, pa.methods.one_shot(0.5, at=1, unit="step"), total_steps=4)
    with pytest.raises(pa.UsageError, match="already drives a Pruner"):
        pa.Pruner(model, optimizer, pa.methods.one_shot(0.5, at=1, unit="step"), total_steps=4)
    first.finalize()
    pa.Pruner(model, optimizer, pa.methods.one_shot(0.5, at=1, unit="step"), total_steps=4)  # the first one let go
