"""When the driver zeroes pruned gradients: only where it can change a weight.

With an elementwise optimizer (torch's SGD/Adam family) and no stage that may bring a pruned weight
back with its statistics, the pass is skipped; the weights must come out exactly as with it (compared
against the same run forced to zero them, through an optimizer subclass the driver does not trust).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core import Stage
from pruneaware.core.optimizer_hooks import is_elementwise
from tests.helpers import ThreeLayerMLP, random_batches

GMP = {"pruning": {"schedule": {"type": "cubic", "final": 0.8, "begin": 1, "end": 6, "every": 1, "unit": "step"}}}
STEPS = 12


class TrustedNot(torch.optim.AdamW):
    """AdamW under another type: the driver cannot know it is elementwise, so it zeroes pruned gradients."""


class Opaque(Stage):
    """A user stage that declares nothing: assumed to bring pruned weights back."""

    name = "opaque"
    follows_structure = True


def run(optimizer_type: type[torch.optim.Optimizer], recipe: Any, stages: list[Stage] | None = None) -> tuple[torch.nn.Module, pa.Pruner, list[bool]]:
    """Train STEPS steps; record, per step, whether every pruned gradient was zero when the optimizer stepped."""
    torch.manual_seed(0)
    model = ThreeLayerMLP()
    optimizer = optimizer_type(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=STEPS)
    if stages:
        pruner.stages.extend(stages)
    zeroed: list[bool] = []

    def observe(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:  # registered after the pruner's: runs after it
        pruned = [(p.grad[~pruner.masks[n]]) for n, p in pruner.params.items() if p.grad is not None and not bool(pruner.masks[n].all())]
        if pruned:
            zeroed.append(all(bool((g == 0).all()) for g in pruned))

    optimizer.register_step_pre_hook(observe)
    for x, y in random_batches(STEPS, 20, 4):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, pruner, zeroed


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("optimizer_type", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_gmp_with_an_elementwise_optimizer_skips_the_pass_and_trains_the_same_weights(optimizer_type) -> None:
    fast, pruner, zeroed = run(optimizer_type, GMP)
    forced_type = type("Forced", (optimizer_type,), {})
    forced, _, forced_zeroed = run(forced_type, GMP)
    assert zeroed and not any(zeroed)  # pruned gradients reached the optimizer untouched
    assert forced_zeroed and all(forced_zeroed)
    assert same_weights(fast, forced)
    assert pruner.masks.sparsity() == pytest.approx(0.8, abs=0.01)
    assert all(bool((p[~pruner.masks[n]] == 0).all()) for n, p in pruner.params.items())


def test_optimizers_outside_the_elementwise_family_and_undeclared_stages_keep_the_pass() -> None:
    assert is_elementwise(torch.optim.AdamW([torch.zeros(1, requires_grad=True)]))
    assert not is_elementwise(TrustedNot([torch.zeros(1, requires_grad=True)]))
    assert not is_elementwise(None)  # driven by hand: the optimizer is unknown
    _, _, zeroed = run(TrustedNot, GMP)
    assert zeroed and all(zeroed)
    _, _, zeroed = run(torch.optim.AdamW, GMP, stages=[Opaque()])
    assert zeroed and all(zeroed)


def test_rigl_regrowth_restarts_statistics_so_skipping_the_pass_changes_no_weight() -> None:
    recipe = pa.methods.rigl(0.8, end=8, every=2, unit="step")
    fast, pruner, zeroed = run(torch.optim.Adam, recipe)
    forced, _, _ = run(type("Forced", (torch.optim.Adam,), {}), pa.methods.rigl(0.8, end=8, every=2, unit="step"))
    assert zeroed and not any(zeroed)
    assert same_weights(fast, forced)


def test_splicing_passes_gradients_while_it_may_revive_then_zeroes_nothing_it_need_not() -> None:
    fast, pruner, zeroed = run(torch.optim.Adam, pa.methods.dynamic_surgery(0.8, end=6, every=2, unit="step"))
    forced, _, _ = run(type("Forced", (torch.optim.Adam,), {}), pa.methods.dynamic_surgery(0.8, end=6, every=2, unit="step"))
    assert same_weights(fast, forced)
    assert not zeroed[-1]  # after the last splice no pruned weight can return: the pass is skipped
