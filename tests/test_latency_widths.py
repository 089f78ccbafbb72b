"""Latency allocation's default widths (``round_to: auto``) and its BatchNorm-recalibrated sensitivity."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pruneaware as pa
from pruneaware.core.errors import ConfigError
from pruneaware.hardware.allocate import Budgets, GroupInfo, auto_round_to, layer_resources, recalibrated_loss, search
from pruneaware.hardware.keys import TableKey
from pruneaware.hardware.layers import capture_contexts
from pruneaware.hardware.table import LatencyTable, Sweep
from pruneaware.stages.latency_allocation import LatencyAllocation


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEAWARE_CACHE", str(tmp_path))


def test_auto_step_grows_with_the_layer_width():
    assert [auto_round_to(w) for w in (6, 15, 16, 48, 63, 64, 96, 127, 128, 512, 4096)] == [1, 1, 8, 8, 8, 16, 16, 16, 32, 32, 32]
    with pytest.raises(ValueError, match="channel count"):
        auto_round_to(-1)


@pytest.mark.parametrize("bad", [0, -8, "fast", True, 2.5])
def test_round_to_must_be_a_positive_integer_or_auto(bad):
    with pytest.raises(ConfigError, match="round_to"):
        LatencyAllocation(macs=0.5, round_to=bad)
    assert LatencyAllocation(macs=0.5).round_to == "auto"
    with pytest.raises(ConfigError, match="recalibrate"):
        LatencyAllocation(macs=0.5, recalibrate="yes")


def narrow_and_wide() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 160, 3, padding=1), nn.BatchNorm2d(160), nn.ReLU(),
        nn.Conv2d(160, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 4),
    )


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 12, 12, generator=generator), torch.randint(0, 4, (8,), generator=generator)) for _ in range(2)]


def test_default_widths_are_multiples_of_each_layers_step():
    model, data = narrow_and_wide(), batches()
    recipe = pa.Recipe.from_dict({
        "structured": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}, "target": {"macs": 0.4}, "max_layer_ratio": 0.8},
        "stages": ["channels", {"type": "latency_allocation", "threads": 1}],
    })
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=2, example_inputs=data[0][0], calibration_data=data, loss_fn=nn.functional.cross_entropy)
    for x, y in data:
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    model = pruner.finalize()
    widths = [model[0].out_channels, model[3].out_channels, model[6].out_channels]
    assert widths != [16, 160, 48]
    assert widths[0] % 8 == 0 and widths[1] % 32 == 0 and widths[2] % 8 == 0  # 16 and 48 wide: step 8; 160 wide: step 32


def test_recalibrated_loss_normalizes_each_batch_by_its_own_statistics_and_restores_the_old():
    model, data = narrow_and_wide(), batches()
    model.train()
    with torch.no_grad():  # stale statistics, far from what the batches produce; a classifier that makes them matter
        model[11].weight.mul_(20)
        for norm in (model[1], model[4], model[7]):
            norm.running_mean.fill_(3.0)
            norm.running_var.fill_(0.01)
    saved = copy.deepcopy(model.state_dict())
    fresh = copy.deepcopy(model).eval()
    for norm in (fresh[1], fresh[4], fresh[7]):
        norm.train()  # batch statistics, everything else (dropout) in eval mode
    with torch.no_grad():
        expected = sum(float(nn.functional.cross_entropy(fresh(x), y)) for x, y in data) / len(data)
        stale = sum(float(nn.functional.cross_entropy(model.eval()(x), y)) for x, y in data) / len(data)
    model.train()

    def loss(module, batch):
        return nn.functional.cross_entropy(module(batch[0]), batch[1])

    measured = recalibrated_loss(model, data, loss)
    assert measured == pytest.approx(expected, rel=1e-5)
    assert abs(measured - stale) > 0.1 * abs(stale)
    assert model.training and all(m.training for m in model.modules())
    assert model[1].momentum == 0.1
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_recalibrated_loss_without_batchnorm_is_the_eval_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 12 * 12, 4))
    data = batches()
    with torch.no_grad():
        expected = sum(float(nn.functional.cross_entropy(model.eval()(x), y)) for x, y in data) / len(data)
    model.train()
    assert recalibrated_loss(model, data, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])) == pytest.approx(expected)
    assert model.training


def test_distillation_beside_a_macs_target_and_latency_allocation():
    """The target measures slim deep copies of the student: the distillation hook must not drag its stage into them."""
    model, data = narrow_and_wide(), batches()
    recipe = pa.Recipe.from_dict({
        "structured": {"schedule": {"type": "linear", "final": 0.8, "begin": 0, "end": 0.5, "every": 0.5}, "target": {"macs": 0.5}, "max_layer_ratio": 0.8},
        "stages": ["channels", {"type": "latency_allocation", "threads": 1}, {"type": "distill", "kl": 1.0}],
    })
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=4, example_inputs=data[0][0], calibration_data=data, loss_fn=nn.functional.cross_entropy)
    for x, y in data * 2:
        loss = nn.functional.cross_entropy(model(x), y)
        penalty = pruner.penalty()
        assert isinstance(penalty, torch.Tensor) and penalty.requires_grad  # the KL term against the dense teacher
        (loss + penalty).backward()
        optimizer.step()
        optimizer.zero_grad()
    model = pruner.finalize()
    assert [model[0].out_channels, model[3].out_channels, model[6].out_channels] != [16, 160, 48]


def synthetic_search(budgets: Budgets) -> tuple[dict[int, int], list[GroupInfo], LatencyTable, nn.Module]:
    """The search on a three-layer chain whose latency is proportional to MACs, two groups cut in steps of 16 and 32."""
    table, model, groups = synthetic_problem()
    return search(table, model, groups, budgets), groups, table, model


def synthetic_problem() -> tuple[LatencyTable, nn.Module, list[GroupInfo]]:
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 96, 3), nn.Conv2d(96, 4, 1))
    contexts, per_channel = capture_contexts(model, torch.randn(1, 3, 12, 12))

    def sweep(name: str) -> Sweep:
        context = contexts[name]
        cost = lambda i, o: 1e-6 * i * o * per_channel[name]  # noqa: E731
        widths = lambda full: sorted({*range(8, full, 8), full})  # noqa: E731
        return Sweep(cost(context.in_full, context.out_full), [(w, cost(context.in_full, w)) for w in widths(context.out_full)],
                     [(w, cost(w, context.out_full)) for w in widths(context.in_full)])

    key = TableKey("cpu", "torch", "-", 1, "float32", 1)
    sweeps = {contexts[name].signature(): sweep(name) for name in contexts}
    table = LatencyTable(key, contexts, sweeps, sum(s.full_ms for s in sweeps.values()), per_channel)
    groups = [
        GroupInfo(None, model[0], ["0"], ["1"], 64, 8, [(0.0, 0.0), (0.5, 0.3), (0.75, 0.9)], step=16),
        GroupInfo(None, model[1], ["1"], ["2"], 96, 8, [(0.0, 0.0), (0.5, 0.3), (0.75, 0.9)], step=32),
    ]
    return table, model, groups


def test_search_meets_the_budget_and_leaves_no_step_it_could_afford():
    budgets = Budgets(macs=0.3)  # narrowing alone ends at 32 / 32, a step of 16 below what the budget affords
    widths, groups, table, model = synthetic_search(budgets)

    def macs(chosen: dict[int, int]) -> float:
        first, second = chosen[0], chosen[1]
        return sum(layer_resources(table, name, i, o)[0] for name, (i, o) in {"0": (3, first), "1": (first, second), "2": (second, 4)}.items())

    dense = macs({0: 64, 1: 96})
    assert macs(widths) <= 0.3 * dense
    assert widths[0] % 16 == 0 and widths[1] % 32 == 0
    for index, info in enumerate(groups):  # widening any group by one step would break the budget
        if widths[index] < info.width:
            assert macs({**widths, index: widths[index] + info.step}) > 0.3 * dense

