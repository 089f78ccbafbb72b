"""Structured pruning and the traced path: layers the trace never ran are refused by name before anything is cut,
and frozen layers are traced and cut together with their norms."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core.errors import TraceError

POSITIVE = torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) + 0.1
NEGATIVE = -POSITIVE
LABELS = torch.arange(8) % 3


def recipe(at: int = 2) -> pa.Recipe:
    schedule = {"type": "one_shot", "sparsity": 0.25, "at": at, "unit": "step"}
    return pa.Recipe.from_dict({"name": "paths", "structured": {"schedule": schedule}})


class Branchy(nn.Module):
    """Data-dependent control flow: which layer feeds the head depends on the sign of the batch's sum."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down, self.head = nn.Linear(6, 16), nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.up(x) if x.sum() > 0 else self.down(x)
        return self.head(F.relu(hidden))


class AuxiliaryHead(nn.Module):
    """A branch that runs only in training mode (like Inception's auxiliary classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.aux, self.head = nn.Linear(6, 16), nn.Linear(16, 3), nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.relu(self.body(x))
        out = self.head(hidden)
        return out + self.aux(hidden) if self.training else out


def shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {name: param.shape for name, param in model.named_parameters()}


def train(pruner: pa.Pruner, optimizer: torch.optim.Optimizer, batches: list[Tensor]) -> None:
    for batch in batches:
        loss = F.cross_entropy(pruner.model(batch), LABELS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_a_branch_the_trace_did_not_take_is_named_before_any_channel_is_cut() -> None:
    torch.manual_seed(0)
    model = Branchy()
    before = shapes(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe(at=2), steps_per_epoch=4, epochs=1, example_inputs=POSITIVE)
    train(pruner, optimizer, [POSITIVE])
    with pytest.raises(TraceError, match="'down' ran, but not when the model was traced"):
        train(pruner, optimizer, [NEGATIVE])
    assert shapes(model) == before


def test_the_untraced_branch_is_named_after_removal_too_and_the_guard_survives_copies() -> None:
    torch.manual_seed(0)
    model = Branchy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe(at=1), steps_per_epoch=4, epochs=1, example_inputs=POSITIVE)
    train(pruner, optimizer, [POSITIVE, POSITIVE, POSITIVE])
    assert model.up.out_features < 16, "channels were removed on the traced path"
    for copied in (model, copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with pytest.raises(TraceError, match="'down'"):
            copied(NEGATIVE)


def test_a_branch_run_only_in_training_mode_is_refused_when_the_pruner_is_built() -> None:
    torch.manual_seed(0)
    model = AuxiliaryHead()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(TraceError, match="'aux' runs in training mode but not in eval mode"):
        pa.Pruner(model, optimizer, recipe(), steps_per_epoch=4, epochs=1, example_inputs=POSITIVE)
    assert model.training and all(torch.equal(model.state_dict()[name], value) for name, value in before.items())


def frozen_stem_net() -> nn.Sequential:
    """MNASNet's opening: a stem convolution, its norm, then a depthwise convolution coupled channel for channel."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 3),
    )  # fmt: skip


def test_a_frozen_stem_loses_channels_with_its_norm_and_stays_frozen() -> None:
    model = frozen_stem_net()
    model[0].requires_grad_(False)
    images = torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    schedule = {"type": "one_shot", "sparsity": 0.5, "at": 1, "unit": "step"}
    pruner = pa.Pruner(model, optimizer, pa.Recipe.from_dict({"name": "stem", "structured": {"schedule": schedule}}),
                       steps_per_epoch=3, epochs=1, example_inputs=images)  # fmt: skip
    for _ in range(3):
        loss = F.cross_entropy(pruner.model(images), LABELS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    stem, norm, depthwise = model[0], model[1], model[3]
    assert stem.out_channels < 16, "the frozen stem was left out of its channel group"
    assert stem.out_channels == norm.running_mean.numel() == norm.weight.numel() == depthwise.in_channels
    assert not stem.weight.requires_grad and norm.weight.requires_grad
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("0."))
