"""RigL: constant sparsity with periodic drop-by-magnitude and grow-by-gradient; Erdős–Rényi(-Kernel) layer densities."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from tests.helpers import ThreeLayerMLP, random_batches
from pruneaware import Pruner, Recipe
from pruneaware.granularity.allocation import erdos_renyi_densities
from pruneaware.core.errors import ConfigError
from pruneaware.granularity import Block, Element
from pruneaware.methods import rigl
from pruneaware.rules.regrow import Regrow, swap_layer

STEPS = 30
EVERY = 4
PRUNED = ["fc1.weight", "fc2.weight"]


def MLP() -> nn.Module:
    return ThreeLayerMLP((10, 20, 40, 4))


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MLP()


def make_batches(steps: int = STEPS, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return random_batches(steps, 10, 4, seed)


def recipe(**options) -> Recipe:
    return rigl(**{"sparsity": 0.8, "every": EVERY, "end": 24, "unit": "step", "fraction": 0.5, **options})


def train(model, optimizer, batches, start=0, stop=None, after_step=None) -> None:
    for step in range(start, len(batches) if stop is None else stop):
        x, y = batches[step]
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(step + 1)


# -- Erdős–Rényi(-Kernel) densities, checked by hand ----------------------------------------------


def test_erk_densities_of_a_two_layer_net_by_hand():
    # (20, 10): (20 + 10) / 200 = 0.15; (40, 20): 60 / 800 = 0.075. Density 0.2 of 1000 weights = 200 kept,
    # so eps = 200 / (0.15 * 200 + 0.075 * 800) = 200 / 90 and the densities are 1/3 and 1/6.
    densities = erdos_renyi_densities({"a": (20, 10), "b": (40, 20)}, 0.2)
    assert densities == pytest.approx({"a": 1 / 3, "b": 1 / 6})
    masks = Element(scope="erk").masks({"a": torch.rand(20, 10), "b": torch.rand(40, 20)}, 0.8)
    assert int(masks["a"].sum()) == 67 and int(masks["b"].sum()) == 133  # round(200 / 3), round(800 / 6)


def test_kernel_sizes_count_in_erk_but_not_in_er():
    shapes = {"conv": (8, 4, 3, 3), "fc": (10, 72)}  # 288 and 720 weights; half of 1008 = 504 kept
    # ERK: conv (8 + 4 + 3 + 3) / 288 = 0.0625, fc 82 / 720; eps = 504 / (18 + 82) = 5.04
    assert erdos_renyi_densities(shapes, 0.5) == pytest.approx({"conv": 0.315, "fc": 5.04 * 82 / 720})
    # ER: conv (8 + 4) / 32 = 0.375; eps = 504 / (0.375 * 288 + 82) = 504 / 190
    assert erdos_renyi_densities(shapes, 0.5, kernel=False) == pytest.approx({"conv": 0.375 * 504 / 190, "fc": 82 / 190 * 504 / 720})


def test_a_layer_that_would_exceed_density_one_stays_dense():
    # (2, 2): 4 / 4 = 1 would get eps * 1 > 1, so it keeps its 4 weights and (100, 100) gets 5002 - 4 of 10000.
    densities = erdos_renyi_densities({"small": (2, 2), "large": (100, 100)}, 0.5)
    assert densities == pytest.approx({"small": 1.0, "large": 0.4998})
    assert erdos_renyi_densities({"a": (3, 4)}, 1.0) == {"a": 1.0}


def test_erk_allocation_for_blocks_and_overall_sparsity():
    scores = {"a": torch.rand(20, 12), "b": torch.rand(40, 20)}
    masks = Block(shape=(1, 4), scope="erk").masks(scores, 0.8)
    kept = sum(int(m.sum()) for m in masks.values())
    assert abs(kept - 0.2 * 1040) <= 8, "within one block per layer of the target"


def test_unknown_allocation_names_the_choices():
    with pytest.raises(ConfigError, match=r"scope.*'layer', 'global', 'er' or 'erk'"):
        recipe(allocation="erdos")
    with pytest.raises(ConfigError, match=r"granularity\.scope.*'erk'"):
        Element(scope="erdos")


# -- drop and grow ----------------------------------------------------------------------------------


def test_swap_drops_the_smallest_active_and_grows_the_largest_inactive_gradients():
    mask = torch.tensor([True, True, True, True, False, False, False, False])
    magnitude = torch.tensor([0.5, 0.1, 0.9, 0.2, 0.0, 0.0, 0.0, 0.0])
    grad = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, 0.8, 0.1, 0.7])
    new = swap_layer(mask, magnitude, grad, 0.5)  # 2 of 4 active swapped
    assert new.tolist() == [True, False, True, False, False, True, False, True]


def test_a_dropped_weight_with_a_large_gradient_is_grown_back():
    mask = torch.tensor([True, True, False])
    new = swap_layer(mask, torch.tensor([0.1, 0.9, 0.0]), torch.tensor([5.0, 0.0, 1.0]), 0.5)
    assert new.tolist() == [True, True, False]


def test_update_fraction_decays_on_a_cosine_to_zero():
    regrow = Regrow(0.3, begin=0, end=100)
    assert regrow.fraction_at(0) == 0.0, "the first update only sets the topology"
    assert regrow.fraction_at(1) == pytest.approx(0.15 * (1 + math.cos(math.pi / 100)))
    assert regrow.fraction_at(50) == pytest.approx(0.15)
    assert regrow.fraction_at(100) == pytest.approx(0.0)
    assert Regrow(0.3, begin=0, end=100, decay="constant").fraction_at(70) == 0.3


def test_sparsity_stays_constant_while_the_mask_changes():
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # a gradient recorder that runs before the pruner's hook, so it sees the dense gradients too
    dense_grads = {}
    optimizer.register_step_pre_hook(lambda *_: dense_grads.update({n: p.grad.abs().clone() for n, p in model.named_parameters()}))
    pruner = Pruner(model, optimizer, recipe(), total_steps=STEPS)
    expected = erdos_renyi_densities({n: tuple(p.shape) for n, p in pruner.params.items()}, 0.2)
    counts = {name: round(expected[name] * pruner.params[name].numel()) for name in PRUNED}
    assert {name: pruner.masks.kept(name) for name in PRUNED} == counts
    masks = {name: pruner.masks[name].clone() for name in PRUNED}
    changed = []

    def after_step(step: int) -> None:
        assert {name: pruner.masks.kept(name) for name in PRUNED} == counts, step
        for name in PRUNED:
            weight = pruner.params[name].detach()
            assert not weight[~pruner.masks[name]].any()
            grown = pruner.masks[name] & ~masks[name]
            if grown.any():
                assert step % EVERY == 0 and step < 24
                assert not weight[grown].any(), "grown weights start at zero"
                assert not optimizer.state[pruner.params[name]]["momentum_buffer"][grown].any(), "and so does their momentum"
                inactive_before = dense_grads[name][~masks[name]]
                assert dense_grads[name][grown].min() >= inactive_before.kthvalue(inactive_before.numel() - int(grown.sum()) + 1).values - 1e-12
                changed.append((step, name))
            masks[name] = pruner.masks[name].clone()

    train(model, optimizer, make_batches(), after_step=after_step)
    assert {step for step, _ in changed} == {4, 8, 12, 16, 20}, "the mask moves at every update but the first and the last"
    assert pruner.summary().sparsity == pytest.approx(0.8, abs=0.01)


def test_initial_topology_is_random_not_magnitude():
    model = make_model()
    pruner = Pruner(model, torch.optim.SGD(model.parameters(), lr=0.1), recipe(allocation="layer"), total_steps=STEPS)
    kept = model.fc2.weight.detach()[pruner.masks["fc2.weight"]].abs()
    pruned = make_model().fc2.weight.detach()[~pruner.masks["fc2.weight"]].abs()
    assert kept.min() < pruned.max(), "random survivors: some pruned weights were larger than some kept ones"


@pytest.mark.parametrize("stop_at", [3, 4, 9, 16, 26])  # 4 and 16 are update steps, 26 after the last (24)
def test_resume_mid_run_is_bit_identical(stop_at):
    batches = make_batches()
    model_a = make_model()
    optimizer_a = torch.optim.Adam(model_a.parameters(), lr=0.01)
    Pruner(model_a, optimizer_a, recipe(), total_steps=STEPS)
    train(model_a, optimizer_a, batches)

    model_b = make_model()
    optimizer_b = torch.optim.Adam(model_b.parameters(), lr=0.01)
    pruner_b = Pruner(model_b, optimizer_b, recipe(), total_steps=STEPS)
    train(model_b, optimizer_b, batches, stop=stop_at)
    buffer = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "optimizer": optimizer_b.state_dict(), "pruner": pruner_b.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer)

    model_c = make_model(seed=42)
    optimizer_c = torch.optim.Adam(model_c.parameters(), lr=0.01)
    pruner_c = Pruner(model_c, optimizer_c, recipe(), total_steps=STEPS)
    pruner_c.load_state_dict(state["pruner"])
    model_c.load_state_dict(state["model"])
    optimizer_c.load_state_dict(state["optimizer"])
    train(model_c, optimizer_c, batches, start=stop_at)
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), name


@pytest.mark.parametrize(
    "change,match",
    [
        ({"granularity": {"type": "block", "shape": [1, 4]}}, r"recipe\.pruning.*'element' with 'regrow'"),
        ({"regrow": {"fraction": 0}}, r"pruning\.regrow\.fraction"),
        ({"regrow": {"decay": "linear"}}, r"pruning\.regrow\.decay.*'cosine' or 'constant'"),
    ],
)
def test_bad_regrow_settings_raise_config_errors(change, match):
    data = copy.deepcopy(recipe().to_dict())
    data["pruning"].update(change)
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(data)
