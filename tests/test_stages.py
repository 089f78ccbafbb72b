"""The stage protocol and driver: user-defined stages from YAML, the stages: order, the registry's errors,
targets reported by every kind of stage, non-finite weights at a mask update, and recipe names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
import yaml
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core import Context, Stage, register_stage
from tests.golden.runs import TinyCNN1d, batches
from tests.helpers import ThreeLayerMLP, random_batches

GMP = {"pruning": {"schedule": {"type": "cubic", "final": 0.8, "begin": 1, "end": 6, "every": 1, "unit": "step"}}}


@register_stage("clip_weights")
class ClipWeights(Stage):
    """A stage defined outside the package: clamps the weights in scope after every step, counting its calls."""

    follows_structure = True

    def __init__(self, limit: float = 0.1):
        self.limit, self.calls = limit, 0

    def update(self, ctx: Context) -> None:
        if ctx.step > 0:
            with torch.no_grad():
                for param in ctx.params.values():
                    param.clamp_(-self.limit, self.limit)
            self.calls += 1

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        self.calls = state["calls"]


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, pruner: pa.Pruner, steps: int) -> None:
    for x, y in random_batches(steps, 20, 4):
        loss = F.cross_entropy(model(x), y) + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_a_user_defined_stage_registered_here_runs_from_yaml_in_the_listed_order(tmp_path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**GMP, "stages": ["prune", {"type": "clip_weights", "limit": 0.05}]}))
    torch.manual_seed(0)
    model = ThreeLayerMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    pruner = pa.Pruner(model, optimizer, str(path), total_steps=8)
    assert [stage.name for stage in pruner.stages] == ["prune", "clip_weights"]
    train(model, optimizer, pruner, 8)
    assert pruner.stage("clip_weights").calls == 8
    assert all(float(p.detach().abs().max()) <= 0.05 + 1e-7 for p in pruner.params.values())
    assert pruner.masks.sparsity() == pytest.approx(0.8, abs=0.01)
    state = pruner.state_dict()
    assert state["format"] == 2 and state["stages"]["clip_weights"] == {"calls": 8}
    resumed = pa.Pruner(ThreeLayerMLP(), None, str(path), total_steps=8)
    resumed.load_state_dict(state)
    assert resumed.stage("clip_weights").calls == 8 and resumed.step_count == 8


def test_stages_list_errors_name_the_entry_and_the_valid_stages() -> None:
    model = ThreeLayerMLP()
    with pytest.raises(pa.ConfigError, match="clip_weights") as unknown:
        pa.Pruner(model, None, {**GMP, "stages": ["prune", "clip_wieghts"]}, total_steps=8)
    assert unknown.value.field == "recipe.stages[1]" and "prune" in str(unknown.value)
    with pytest.raises(pa.ConfigError, match=r"add \['prune'\]"):
        pa.Pruner(model, None, {**GMP, "stages": ["clip_weights"]}, total_steps=8)
    with pytest.raises(pa.ConfigError, match="built from its recipe section"):
        pa.Pruner(model, None, {**GMP, "stages": ["prune", "rewind"]}, total_steps=8)
    with pytest.raises(pa.ConfigError, match="options stage 'clip_weights' accepts"):
        pa.Pruner(model, None, {**GMP, "stages": ["prune", {"type": "clip_weights", "limt": 1}]}, total_steps=8)
    with pytest.raises(pa.ConfigError, match="each stage once"):
        pa.Pruner(model, None, {**GMP, "stages": ["prune", "clip_weights", "clip_weights"]}, total_steps=8)


def test_a_recipe_of_user_stages_alone_is_a_recipe() -> None:
    model = ThreeLayerMLP()
    pruner = pa.Pruner(model, None, {"stages": [{"type": "clip_weights", "limit": 0.01}]}, total_steps=2)
    pruner.step()
    assert float(model.fc1.weight.detach().abs().max()) <= 0.01 + 1e-7


def test_targets_of_structured_and_topk_runs_are_reported_not_zero() -> None:
    x = batches((1, 40))[0][0]
    structured = {"structured": {"schedule": {"type": "linear", "final": 0.5, "begin": 0, "end": 4, "every": 2, "unit": "step"}}}
    pruner = pa.Pruner(TinyCNN1d(), None, structured, total_steps=8, example_inputs=x)
    for _ in range(4):
        pruner.step()
    assert pruner.target_sparsity() == pytest.approx(0.5) and pruner.summary().target == pytest.approx(0.5)
    model = ThreeLayerMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    topk = pa.Pruner(model, optimizer, pa.methods.topk_movement(0.6, begin=0.0, end=0.5), total_steps=8)
    train(model, optimizer, topk, 6)
    assert topk.target_sparsity() == pytest.approx(0.6) and topk.summary().target == pytest.approx(0.6)
    assert topk.target_schedule() is topk.stage("regularizer").regularizer.schedule


def test_non_finite_weights_at_a_mask_update_stop_naming_layer_and_step() -> None:
    model = ThreeLayerMLP()
    pruner = pa.Pruner(model, None, GMP, total_steps=8)
    pruner.step()
    pruner.step()
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    with pytest.raises(pa.StateError, match=r"'fc2.weight'.*step 3"):
        pruner.step()


def test_a_shipped_recipe_name_is_accepted_as_the_callbacks_accept_it() -> None:
    model = TinyCNN1d()
    pruner = pa.Pruner(model, None, "default", total_steps=40)
    assert pruner.recipe.name == "gmp-90-mnist1d" and [stage.name for stage in pruner.stages] == ["prune"]
    with pytest.raises(pa.ConfigError, match="'default'"):
        pa.Pruner(model, None, "defualt", total_steps=40)


def test_old_attributes_still_answer_with_a_deprecation_warning() -> None:
    pruner = pa.Pruner(ThreeLayerMLP(), None, GMP, total_steps=8)
    with pytest.warns(DeprecationWarning, match=r"pruner.stage\('prune'\).schedule"):
        assert pruner.schedule is pruner.stage("prune").schedule
    with pytest.warns(DeprecationWarning):
        assert pruner.regularizer is None
    with pytest.raises(pa.UsageError, match="no stage 'rewind'"):
        pruner.stage("rewind")


@pytest.mark.parametrize("builder", ["gradual_magnitude", "fisher_pruning", "snip", "grasp", "synflow"])
def test_method_builders_take_allocation_and_pass_scope_through_as_the_scope_section(builder: str) -> None:
    build = getattr(pa.methods, builder)
    recipe = build(0.8, allocation="layer", scope={"exclude": ["fc1"]})
    assert recipe.pruning.granularity.scope == "layer" and recipe.scope.exclude == ("fc1",)
    data = random_batches(1, 20, 4)
    pruner = pa.Pruner(ThreeLayerMLP(), None, recipe, total_steps=100, example_inputs=data[0][0], calibration_data=data, loss_fn=F.cross_entropy)
    assert set(pruner.params) == {"fc2.weight"}
    with pytest.warns(DeprecationWarning, match="allocation="):
        assert build(0.8, scope="erk").pruning.granularity.scope == "erk"


def test_schedule_errors_of_structured_and_topk_sections_name_their_own_section() -> None:
    bad = {"type": "cubic", "final": 0.5, "begin": 0.6, "end": 0.2}
    with pytest.raises(pa.ConfigError) as structured:
        pa.Recipe.from_dict({"structured": {"schedule": bad}})
    assert structured.value.field.startswith("recipe.structured.schedule")
    with pytest.raises(pa.ConfigError) as topk:
        pa.Recipe.from_dict({"regularizer": {"type": "topk_movement", "schedule": bad}})
    assert topk.value.field.startswith("recipe.regularizer.schedule")
