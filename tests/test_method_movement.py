"""Movement pruning: hard (top-k of accumulated -w * dL/dw) and soft (learned scores above a threshold, regularized down)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.helpers import ThreeLayerMLP, random_batches
from pruneaware import Pruner
from pruneaware.methods.movement import movement_pruning

STEPS = 40


def train(model: nn.Module, optimizer: torch.optim.Optimizer, pruner: Pruner, batches, start: int = 0, stop: int | None = None) -> None:
    for x, y in batches[start:stop]:
        loss = F.cross_entropy(model(x), y) + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def top_k_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[scores.flatten().topk(keep).indices] = True
    return mask.view_as(scores)


# -- hard movement --------------------------------------------------------------------------------


def test_hard_mask_is_the_top_k_of_accumulated_movement_not_of_magnitude():
    layer = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -1.5, 1.2, -1.0, 0.3, -0.2, 0.25, -0.1]]))
    # the four large weights shrink toward zero, the four small ones grow away from it
    gradient = torch.tensor([[0.5, -0.5, 0.5, -0.5, -0.5, 0.5, -0.5, 0.5]])
    recipe = movement_pruning(0.5, begin=3, end=3, every=1, unit="step", allocation="layer", scope={"skip_last": False})
    pruner = Pruner(layer, None, recipe, total_steps=5)
    accumulated = torch.zeros_like(layer.weight)
    for _ in range(3):
        layer.weight.grad = gradient.clone()
        accumulated -= layer.weight.detach() * gradient
        pruner.before_step()
        with torch.no_grad():
            layer.weight -= 0.1 * layer.weight.grad
        magnitudes = layer.weight.detach().abs()  # what magnitude pruning would rank at this update
        pruner.step()
    by_movement, by_magnitude = top_k_mask(accumulated, 4), top_k_mask(magnitudes, 4)
    assert not torch.equal(by_movement, by_magnitude)  # the case tells the two criteria apart
    assert torch.equal(pruner.masks["weight"], by_movement)
    assert pruner.masks["weight"].flatten().tolist() == [False] * 4 + [True] * 4


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ThreeLayerMLP()


def test_hard_masks_follow_the_accumulated_scores_at_every_update_of_a_ramp():
    model, batches = mlp(), random_batches(STEPS, 20, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    accumulated = {name: torch.zeros_like(p) for name, p in model.named_parameters() if name in ("fc1.weight", "fc2.weight")}
    params = dict(model.named_parameters())

    def accumulate(optimizer, args, kwargs):  # registered before the pruner's hook: sees the gradients it sees
        for name, score in accumulated.items():
            score -= params[name].detach() * params[name].grad

    optimizer.register_step_pre_hook(accumulate)
    pruner = Pruner(model, optimizer, movement_pruning(0.8, begin=4, end=24, every=4, unit="step", allocation="layer"), total_steps=STEPS)
    survivors = {name: torch.ones_like(score, dtype=torch.bool) for name, score in accumulated.items()}
    for step, batch in enumerate(batches, start=1):
        train(model, optimizer, pruner, [batch])
        if pruner.schedule.is_update_step(step):
            for name, score in accumulated.items():
                keep = round(score.numel() * (1 - pruner.schedule.value_at(step)))
                expected = top_k_mask(score.masked_fill(~survivors[name], float("-inf")), keep)
                assert torch.equal(pruner.masks[name], expected), (step, name)
                survivors[name] = expected
    assert pruner.summary().sparsity == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize("stop_at", [3, 4, 13])
def test_hard_resume_mid_run_is_bit_identical(stop_at):
    recipe, batches = movement_pruning(0.8, begin=4, end=24, every=4, unit="step"), random_batches(STEPS, 20, 4)

    def run() -> tuple[nn.Module, torch.optim.Optimizer, Pruner]:
        model = mlp()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        return model, optimizer, Pruner(model, optimizer, recipe, total_steps=STEPS)

    model_a, optimizer_a, pruner_a = run()
    train(model_a, optimizer_a, pruner_a, batches)
    model_b, optimizer_b, pruner_b = run()
    train(model_b, optimizer_b, pruner_b, batches, stop=stop_at)
    state = copy.deepcopy({"model": model_b.state_dict(), "optimizer": optimizer_b.state_dict(), "pruner": pruner_b.state_dict()})
    model_c, optimizer_c, pruner_c = run()
    pruner_c.load_state_dict(state["pruner"])
    model_c.load_state_dict(state["model"])
    optimizer_c.load_state_dict(state["optimizer"])
    train(model_c, optimizer_c, pruner_c, batches, start=stop_at)
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), name
    for name, score in pruner_a.criterion.buffers.items():
        assert torch.equal(score, pruner_c.criterion.buffers[name]), name
