"""Dynamic network surgery: pruned weights train on in a dense shadow and are spliced back when they grow."""

from __future__ import annotations

import copy
import io
import time

import pytest
import torch
from torch import nn

from pruneaware import Pruner, Recipe
from pruneaware.core.errors import ConfigError
from pruneaware.granularity import Element
from pruneaware.methods import dynamic_surgery, gradual_magnitude
from pruneaware.models import build_model
from pruneaware.rules.splice import Splice

STEPS = 30


def one_layer() -> nn.Module:
    """A 4x4 layer whose weight (0, 0) is the smallest, so it is pruned first."""
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1, 17, dtype=torch.float32).reshape(4, 4) / 10)
        layer.weight[0, 0] = 0.01
    return nn.Sequential(layer)


def surgery(**options) -> Recipe:
    defaults = {"sparsity": 0.5, "end": 20, "every": 1, "unit": "step", "band": 0.1, "scope": {"skip_last": False}}
    return dynamic_surgery(**{**defaults, **options})


def test_a_weight_pruned_early_is_spliced_back_when_its_magnitude_grows():
    model = one_layer()
    weight = model[0].weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = Pruner(model, optimizer, surgery(), total_steps=STEPS)
    assert not pruner.masks["0.weight"][0, 0] and weight[0, 0] == 0  # pruned at step 0
    x = torch.eye(4)[:1]  # only input 0 is active: only column 0 of the weight gets gradients
    history = []
    for _ in range(12):
        loss = -model(x)[0, 0]  # pushes weight (0, 0) up by lr every step
        optimizer.zero_grad()
        loss.backward()
        assert weight.grad[0, 0] == -1.0, "the pruned weight gets the straight-through gradient"
        optimizer.step()
        history.append((bool(pruner.masks["0.weight"][0, 0]), float(weight.detach()[0, 0]), float(pruner.masks.shadows["0.weight"][0, 0])))
    pruned_steps = [shadow for kept, value, shadow in history if not kept]
    assert pruned_steps and all(value == 0 for kept, value, _ in history if not kept), "the forward pass sees zeros"
    assert pruned_steps == pytest.approx([0.01 + 0.1 * (i + 1) for i in range(len(pruned_steps))]), "the shadow trains"
    back = len(pruned_steps)
    assert all(kept for kept, _, _ in history[back:]), "spliced back and kept"
    assert history[back][1] == pytest.approx(0.01 + 0.1 * (back + 1)), "it returns with its trained value"
    # it came back only once clearly above the weakest kept weight (0.9): 0.9 * w > 1.1 * 0.9
    assert 0.9 * history[back - 1][2] <= 1.1 * 0.9 < 0.9 * history[back][2]
    assert pruner.masks.kept("0.weight") == 8, "the count still meets the target: the weakest kept weight went"
    assert weight[2, 0] == 0 and not pruner.masks["0.weight"][2, 0]


def test_hysteresis_swaps_a_kept_and_a_pruned_weight_only_beyond_the_band():
    element, splice = Element(scope="layer"), Splice(band=0.1)
    current = {"w": torch.tensor([[True, False, True, True]])}
    swapped = torch.tensor([[False, True, True, True]])

    def decide(pruned_score: float) -> torch.Tensor:
        return splice.masks(element, {"w": torch.tensor([[1.0, pruned_score, 3.0, 4.0]])}, current, 0.25)["w"]

    assert torch.equal(element.masks({"w": torch.tensor([[1.0, 1.2, 3.0, 4.0]])}, 0.25)["w"], swapped), "without hysteresis"
    assert torch.equal(decide(1.2), current["w"]), "0.9 * 1.2 < 1.1 * 1.0: stays pruned"
    assert torch.equal(decide(1.25), swapped), "0.9 * 1.25 > 1.1 * 1.0: spliced back, the weaker one cut"


def test_masks_are_fixed_and_splicing_stops_after_the_last_update():
    model = one_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = Pruner(model, optimizer, surgery(end=3), total_steps=STEPS)
    x = torch.eye(4)[:1]
    for step in range(1, 10):
        loss = -model(x)[0, 0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 3:
            frozen = pruner.masks["0.weight"].clone()
    assert torch.equal(pruner.masks["0.weight"], frozen) and not frozen[0, 0]
    assert model[0].weight[0, 0] == 0, "past the last update, the pruned weight no longer trains"
    assert pruner.masks.shadows is not None and not pruner.stage("splice").may_revive(pruner.ctx)


def train_mlp(model, optimizer, batches, start=0, stop=None):
    for x, y in batches[start:stop]:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def mlp_batches(steps: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 20, generator=generator), torch.randint(0, 4, (8,), generator=generator)) for _ in range(steps)]


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", (20,), 4, hidden=(32, 40))


def test_counted_sparsity_meets_the_target_while_the_mask_moves():
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    pruner = Pruner(model, optimizer, dynamic_surgery(0.8, end=20, every=2, unit="step"), total_steps=STEPS)
    first = {name: mask.clone() for name, mask in pruner.masks.masks.items()}
    train_mlp(model, optimizer, mlp_batches())
    assert pruner.summary().sparsity == pytest.approx(0.8, abs=1e-3)
    assert any(not torch.equal(first[n], pruner.masks[n]) for n in first), "some pruned weights came back"


@pytest.mark.parametrize("stop_at", [3, 10, 19, 25])  # 10 is an update step, 25 is after the last (20)
def test_resume_mid_run_is_bit_identical(stop_at):
    recipe, batches = dynamic_surgery(0.8, end=20, every=2, unit="step"), mlp_batches()
    model_a = mlp()
    optimizer_a = torch.optim.Adam(model_a.parameters(), lr=0.05)
    Pruner(model_a, optimizer_a, recipe, total_steps=STEPS)
    train_mlp(model_a, optimizer_a, batches)

    model_b = mlp()
    optimizer_b = torch.optim.Adam(model_b.parameters(), lr=0.05)
    pruner_b = Pruner(model_b, optimizer_b, recipe, total_steps=STEPS)
    train_mlp(model_b, optimizer_b, batches, stop=stop_at)
    buffer = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "optimizer": optimizer_b.state_dict(), "pruner": pruner_b.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer)

    model_c = mlp(seed=5)
    optimizer_c = torch.optim.Adam(model_c.parameters(), lr=0.05)
    pruner_c = Pruner(model_c, optimizer_c, recipe, total_steps=STEPS)
    pruner_c.load_state_dict(state["pruner"])
    model_c.load_state_dict(state["model"])
    optimizer_c.load_state_dict(state["optimizer"])
    train_mlp(model_c, optimizer_c, batches, start=stop_at)
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), name


def test_splice_band_is_validated():
    data = copy.deepcopy(surgery().to_dict())
    data["pruning"]["splice"] = {"band": 1.0}
    with pytest.raises(ConfigError, match=r"pruning\.splice\.band"):
        Recipe.from_dict(data)


def test_step_overhead_against_plain_masks(capsys):
    """Measured, not asserted: splicing adds a restore before and a copy after every step (LeNet-300-100, batch 64)."""
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 784, generator=generator), torch.randint(0, 10, (64,), generator=generator)) for _ in range(4)]
    runs = {}
    for label, recipe in {"masks": gradual_magnitude(0.9, begin=0, end=0, unit="step"), "splice": dynamic_surgery(0.9, end=1000, every=1000, unit="step")}.items():
        torch.manual_seed(0)
        model = build_model("lenet300_100", (784,), 10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        Pruner(model, optimizer, recipe, total_steps=2000)
        runs[label] = (model, optimizer)
    times = {label: [] for label in runs}
    for round_index in range(60):
        for label, (model, optimizer) in runs.items():
            x, y = batches[round_index % len(batches)]
            started = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times[label].append(time.perf_counter() - started)
    median = {label: sorted(values[10:])[len(values[10:]) // 2] * 1e3 for label, values in times.items()}
    with capsys.disabled():
        print(f"\n[dns overhead] LeNet-300-100 step, 1 thread: masks {median['masks']:.3f} ms, splice {median['splice']:.3f} ms "
              f"({100 * (median['splice'] / median['masks'] - 1):+.1f}%)")
