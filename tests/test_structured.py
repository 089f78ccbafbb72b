"""Channel removal during training: real shape changes, consistent optimizer state, and the
Torch-Pruning traps (frozen parameters, train mode, untraceable models) handled."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core.errors import TraceError
from pruneaware.measure import count_macs
from pruneaware.models import build_model

torch.set_num_threads(1)
BATCHES = [(torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)), torch.arange(8) % 10) for i in range(4)]


def structured_recipe(ratio: float = 0.5, at: int = 3, **fields: object) -> pa.Recipe:
    schedule = {"type": "one_shot", "sparsity": ratio, "at": at, "unit": "step"}
    return pa.Recipe.from_dict({"name": "channels", "structured": {"schedule": schedule, **fields}})


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for index in steps:
        inputs, targets = BATCHES[index % len(BATCHES)]
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20", (3, 16, 16), 10)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4),
        lambda params: torch.optim.Adam(params, lr=1e-3),
        lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01),
    ],
    ids=["sgd-momentum", "adam", "adamw"],
)
def test_training_after_surgery_equals_a_fresh_slim_model_with_the_sliced_state(make_optimizer) -> None:
    model = resnet20()
    optimizer = make_optimizer(model.parameters())
    pruner = pa.Pruner(model, optimizer, structured_recipe(at=3), total_steps=10, example_inputs=BATCHES[0][0])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train(model, optimizer, range(3))  # surgery happens inside the third optimizer.step()
    assert model.stages[0][0].conv1.out_channels < 16, "channels were not removed"
    fresh = copy.deepcopy(model)  # new Parameter objects with the slim shapes and the same values
    fresh_optimizer = make_optimizer(fresh.parameters())
    fresh_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    train(model, optimizer, range(3, 8))
    train(fresh, fresh_optimizer, range(3, 8))
    for (name, ours), (_, theirs) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(ours, theirs), name
    assert pruner.step_count == 8
    assert set(before) == {name for name, _ in model.named_parameters()}


def test_sliced_state_is_the_state_of_the_surviving_channels() -> None:
    model = resnet20()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pa.Pruner(model, optimizer, structured_recipe(at=2), total_steps=4, example_inputs=BATCHES[0][0])
    train(model, optimizer, range(1))
    conv = model.stem[0]  # its inputs are the image, so only its output channels shrink
    old_weight = conv.weight.detach().clone()
    train(model, optimizer, range(1, 2))  # step 2 updates the weights, then removes channels
    new_weight, new_momentum = conv.weight.detach(), optimizer.state[conv.weight]["momentum_buffer"]
    assert new_weight.shape[0] < old_weight.shape[0]
    # a surviving filter's weights moved by -lr * momentum in step 2; match each survivor to its old row
    moved = old_weight.unsqueeze(0) - new_weight.unsqueeze(1)  # (new, old, ...)
    for row in range(new_weight.shape[0]):
        distances = moved[row].flatten(1).abs().sum(1)
        source = int(distances.argmin())
        expected = (old_weight[source] - new_weight[row]) / 0.05
        assert torch.allclose(new_momentum[row], expected, atol=1e-4), row


def test_frozen_parameters_stay_frozen_and_train_mode_survives() -> None:
    model = resnet20()
    model.stem[1].weight.requires_grad_(False)
    model.stages[0][0].conv1.weight.requires_grad_(False)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    pa.Pruner(model, optimizer, structured_recipe(at=1), total_steps=2, example_inputs=BATCHES[0][0])
    assert model.training and all(m.training for m in model.modules()), "building the graph left eval mode on"
    train(model, optimizer, range(1))
    assert model.stem[1].weight.shape[0] < 16
    assert not model.stem[1].weight.requires_grad
    assert not model.stages[0][0].conv1.weight.requires_grad
    assert all(m.training for m in model.modules())


def test_macs_drop_and_outputs_keep_their_shape() -> None:
    model = resnet20()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    example = BATCHES[0][0]
    dense = count_macs(model, example[:1]).dense
    pruner = pa.Pruner(model, optimizer, structured_recipe(ratio=0.5, at=1), total_steps=3, example_inputs=example)
    train(model, optimizer, range(2))
    assert model(example).shape == (8, 10)
    slim = count_macs(model, example[:1]).dense
    assert slim < 0.5 * dense
    assert model.fc.out_features == 10, "the classifier's outputs must never be pruned"
    assert pruner.summary().model_parameters < sum(p.numel() for p in resnet20().parameters())


def test_removed_channels_are_gone_from_pruner_params_and_masks() -> None:
    model = resnet20()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, structured_recipe(at=1), total_steps=2, example_inputs=BATCHES[0][0])
    train(model, optimizer, range(1))
    live = {name: p for name, p in model.named_parameters()}
    for name, param in pruner.params.items():
        assert param is live[name]
        assert pruner.masks[name].shape == param.shape
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in model.parameters()}


def test_untraceable_model_raises_trace_error_naming_the_module() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x))  # wrong: conv output is 4-D

    with pytest.raises(TraceError, match="'head'"):
        pa.Pruner(Broken(), None, structured_recipe(at=0), total_steps=1, example_inputs=torch.randn(1, 3, 8, 8))


def test_structured_needs_example_inputs_and_names_stages_that_cannot_follow_channel_removal() -> None:
    with pytest.raises(pa.ConfigError, match="example_inputs"):
        pa.Pruner(resnet20(), None, structured_recipe(at=1), total_steps=2)
    splicing = {
        "pruning": {"schedule": {"type": "constant", "sparsity": 0.5, "begin": 1, "end": 2, "every": 1, "unit": "step"}, "splice": {"band": 0.1}},
        "structured": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 1}},
    }
    with pytest.raises(pa.ConfigError, match="stage 'splice'") as caught:
        pa.Pruner(resnet20(), None, splicing, total_steps=2, example_inputs=BATCHES[0][0])
    assert caught.value.field == "stages.splice"
    with pytest.raises(pa.ConfigError, match="importance"):
        structured_recipe(importance="loudness")


def test_ignored_layers_keep_their_channels() -> None:
    model = resnet20()
    pa.Pruner(model, None, structured_recipe(at=0, ignore=["stem.0", "stages.0.*"]), total_steps=1, example_inputs=BATCHES[0][0])
    assert model.stem[0].out_channels == 16
    assert model.stages[0][0].conv1.out_channels == 16
    assert model.stages[2][0].conv1.out_channels < 64
    with pytest.raises(pa.ScopeError, match="nothing_here"):
        pa.Pruner(resnet20(), None, structured_recipe(at=0, ignore=["nothing_here"]), total_steps=1, example_inputs=BATCHES[0][0])


def test_resume_replays_channel_removals_and_continues_identically() -> None:
    schedule = {"type": "linear", "final": 0.5, "begin": 1, "end": 5, "every": 2, "unit": "step"}
    recipe = pa.Recipe.from_dict({"structured": {"schedule": schedule}})

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, pa.Pruner]:
        model = resnet20()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        return model, optimizer, pa.Pruner(model, optimizer, recipe, total_steps=8, example_inputs=BATCHES[0][0])

    model, optimizer, pruner = fresh()
    train(model, optimizer, range(4))  # removals at steps 1 and 3 so far
    saved = copy.deepcopy({"pruner": pruner.state_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict()})
    train(model, optimizer, range(4, 8))

    resumed_model, resumed_optimizer, resumed_pruner = fresh()
    resumed_pruner.load_state_dict(saved["pruner"])  # first: rebuilds the slim shapes
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    train(resumed_model, resumed_optimizer, range(4, 8))
    for (name, ours), (_, theirs) in zip(model.named_parameters(), resumed_model.named_parameters()):
        assert torch.equal(ours, theirs), name
    assert resumed_pruner.state_dict()["stages"]["channels"] == pruner.state_dict()["stages"]["channels"]


def test_round_to_keeps_channel_counts_aligned_and_caps_hold() -> None:
    model = resnet20()
    pa.Pruner(model, None, structured_recipe(ratio=0.45, at=0, round_to=4, max_layer_ratio=0.5), total_steps=1, example_inputs=BATCHES[0][0])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert any(conv.out_channels not in (16, 32, 64) for conv in convs), "nothing was removed"
    assert all(conv.out_channels % 4 == 0 for conv in convs)
    original = {name: m.out_channels for name, m in resnet20().named_modules() if isinstance(m, nn.Conv2d)}
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            assert conv.out_channels >= original[name] * 0.5, name


def test_uniform_allocation_removes_the_same_fraction_per_layer() -> None:
    model = resnet20()
    pa.Pruner(model, None, structured_recipe(ratio=0.5, at=0, allocation="uniform"), total_steps=1, example_inputs=BATCHES[0][0])
    inner = [block.conv1.out_channels for stage in model.stages for block in stage]
    assert inner == [8] * 3 + [16] * 3 + [32] * 3


class ScaledLinear(nn.Module):
    """A layer Torch-Pruning does not know: its handler below slices in its own way (no shared helper)."""

    def __init__(self, features_in: int, features_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features_out, features_in))
        self.scale = nn.Parameter(torch.rand(features_out) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight.t()) * self.scale


class ScaledLinearPruner(tp.pruner.function.BasePruningFunc):
    def prune_out_channels(self, layer: ScaledLinear, idxs: list) -> ScaledLinear:
        keep = [i for i in range(layer.weight.shape[0]) if i not in set(idxs)]
        layer.weight = nn.Parameter(layer.weight.data[keep].clone())
        layer.scale = nn.Parameter(layer.scale.data[keep].clone())
        return layer

    def prune_in_channels(self, layer: ScaledLinear, idxs: list) -> ScaledLinear:
        keep = [i for i in range(layer.weight.shape[1]) if i not in set(idxs)]
        layer.weight = nn.Parameter(layer.weight.data[:, keep].clone())
        return layer

    def get_out_channels(self, layer: ScaledLinear) -> int:
        return layer.weight.shape[0]

    def get_in_channels(self, layer: ScaledLinear) -> int:
        return layer.weight.shape[1]


def test_layers_with_their_own_pruning_handler_are_tracked_by_provenance() -> None:
    from pruneaware.structured.surgery import FlatCut, prune_group_tracked, remap_optimizer

    torch.manual_seed(0)
    model = nn.Sequential(ScaledLinear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    inputs = torch.randn(4, 6)
    model(inputs).sum().backward()
    optimizer.step()
    weight, scale = model[0].weight.detach().clone(), model[0].scale.detach().clone()
    moment = optimizer.state[model[0].weight]["exp_avg"].clone()
    graph = tp.DependencyGraph().build_dependency(model, inputs, customized_pruners={ScaledLinear: ScaledLinearPruner()})
    group = graph.get_pruning_group(model[0], graph.get_pruner_of_module(model[0]).prune_out_channels, [1, 4, 6])
    remaps = prune_group_tracked(model, group)
    remap_optimizer(optimizer, remaps)
    kept = [0, 2, 3, 5, 7]
    assert torch.equal(model[0].weight, weight[kept]) and torch.equal(model[0].scale, scale[kept])
    assert torch.equal(optimizer.state[model[0].weight]["exp_avg"], moment[kept])
    assert any(isinstance(cut, FlatCut) for remap in remaps for cut in remap.cuts)
    assert model[2].weight.shape == (3, 5)
    model(inputs).sum().backward()
    optimizer.step()  # state and parameters agree after surgery
