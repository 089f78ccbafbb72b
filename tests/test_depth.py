"""Depth pruning: whole blocks removed during training, the optimizer and masks following, save/load/ONNX of the result."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pruneaware as pa
from pruneaware.depth import SkippedBlock, skipped_names
from pruneaware.models.resnet20 import ResNet20


def _resnet() -> ResNet20:
    torch.manual_seed(0)
    return ResNet20((1, 12, 12), 4)


def _train(model, recipe, steps=4, optimizer=None, **kwargs):
    x, y = torch.randn(6, 1, 12, 12), torch.randint(0, 4, (6,))
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=steps, example_inputs=x, **kwargs)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y) + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return pruner, optimizer, x


@pytest.mark.parametrize("importance", ["influence", "gate", "taylor"])
def test_blocks_removed_on_schedule_and_optimizer_follows(importance):
    model = _resnet()
    recipe = {"stages": [{"type": "depth", "remove": 3, "importance": importance, "at": [1, 2], "unit": "step"}]}
    pruner, optimizer, _ = _train(model, recipe)
    removed = skipped_names(model)
    assert len(removed) == 3 and all(name.startswith("stages.") for name in removed)
    live = {id(p) for p in model.parameters()}
    in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in in_optimizer} == live  # removed weights (and every gate after the last removal) left it
    assert set(map(id, optimizer.state)) <= live
    assert set(pruner.masks.params) <= {name for name, _ in model.named_parameters()}
    assert not any(name.startswith(tuple(removed)) for name in pruner.masks.params)
    pruner.finalize()


def test_remaining_layers_keep_their_optimizer_state():
    model = _resnet()
    x = torch.randn(6, 1, 12, 12)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    recipe = {"stages": [{"type": "depth", "remove": 1, "at": [2], "unit": "step"}]}
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=4, example_inputs=x)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).sum().backward()
        before = {id(p): optimizer.state[p]["exp_avg"].clone() for p in model.parameters() if p in optimizer.state}
        optimizer.step()
    fc = model.fc.weight
    assert torch.equal(optimizer.state[fc]["step"], torch.tensor(2.0))
    assert not torch.equal(optimizer.state[fc]["exp_avg"], before[id(fc)])  # kept and updated, not reset
    assert len(skipped_names(model)) == 1
    pruner.finalize()


def test_influence_removes_the_block_that_changes_its_input_least():
    model = _resnet()
    with torch.no_grad():  # stages.0.1's residual branch outputs zero: the block passes its input through (after ReLU of a non-negative input)
        model.stages[0][1].bn2.weight.zero_()
        model.stages[0][1].bn2.bias.zero_()
    recipe = {"stages": [{"type": "depth", "remove": 1}]}
    pruner, _, _ = _train(model, recipe, steps=1)
    assert skipped_names(model) == ["stages.0.1"]


def test_params_and_macs_targets():
    model = _resnet()
    total = sum(p.numel() for p in model.parameters())
    _train(model, {"stages": [{"type": "depth", "params": 0.2}]}, steps=1)
    assert 1 - sum(p.numel() for p in model.parameters()) / total >= 0.2
    model = _resnet()
    _train(model, {"stages": [{"type": "depth", "macs": 0.1}]}, steps=1)
    assert len(skipped_names(model)) >= 1


def test_save_load_and_onnx_of_a_depth_pruned_resnet(tmp_path):
    pytest.importorskip("onnxruntime")
    model = _resnet()
    pruner, _, x = _train(model, {"stages": [{"type": "depth", "remove": 2}]}, steps=2)
    pruner.finalize()
    model.eval()
    pa.save(model, tmp_path / "m")
    loaded = pa.load(tmp_path / "m", _resnet)
    loaded.eval()
    assert len([m for m in loaded.modules() if isinstance(m, SkippedBlock)]) == 2
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    report = pa.export_onnx(model, x, tmp_path / "m.onnx")
    assert report.max_abs_diff < 1e-4


def test_resume_replays_removals():
    model = _resnet()
    pruner, optimizer, x = _train(model, {"stages": [{"type": "depth", "remove": 2, "at": [1], "unit": "step"}]}, steps=2)
    state, weights = pruner.state_dict(), model.state_dict()
    fresh = _resnet()
    recipe = {"stages": [{"type": "depth", "remove": 2, "at": [1], "unit": "step"}]}
    resumed = pa.Pruner(fresh, torch.optim.AdamW(fresh.parameters(), lr=1e-3), recipe, total_steps=2, example_inputs=x)
    resumed.load_state_dict(state)
    fresh.load_state_dict(weights)
    assert skipped_names(fresh) == skipped_names(model)


def test_composes_with_element_pruning():
    model = _resnet()
    recipe = {
        "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0}},
        "stages": ["prune", {"type": "depth", "remove": 2, "at": [2], "unit": "step"}],
    }
    pruner, _, _ = _train(model, recipe)
    assert len(skipped_names(model)) == 2
    assert 0.45 < pruner.summary().sparsity < 0.55


def test_errors_name_the_problem():
    x = torch.randn(2, 1, 12, 12)
    with pytest.raises(pa.ConfigError, match=r"stages.depth.remove.*at most 7"):
        pa.Pruner(_resnet(), None, {"stages": [{"type": "depth", "remove": 8}]}, example_inputs=x)
    with pytest.raises(pa.ConfigError, match=r"stages.1.0.*output shape equals its input"):
        pa.Pruner(_resnet(), None, {"stages": [{"type": "depth", "remove": 1, "layers": ["stages.1.0"]}]}, example_inputs=x)
    with pytest.raises(pa.ScopeError, match="'encoder.*' matches no module"):
        pa.Pruner(_resnet(), None, {"stages": [{"type": "depth", "remove": 1, "layers": ["encoder.*"]}]}, example_inputs=x)
    with pytest.raises(pa.ConfigError, match="exactly one target"):
        pa.Pruner(_resnet(), None, {"stages": [{"type": "depth", "remove": 1, "params": 0.2}]}, example_inputs=x)
    with pytest.raises(pa.ConfigError, match="example_inputs"):
        pa.Pruner(_resnet(), None, {"stages": [{"type": "depth", "remove": 1}]})
    with pytest.raises(pa.ConfigError, match="times after step 0"):
        pa.Pruner(_resnet(), None, {"stages": [{"type": "depth", "remove": 1, "importance": "taylor"}]}, example_inputs=x)
