"""Recipe bounds: absurd, non-finite or mistyped values are refused at validation, naming their field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pruneaware.core.errors import ConfigError
from pruneaware.recipe import Recipe, TrainingLength, read_yaml_mapping


def refused(data: dict) -> str:
    with pytest.raises(ConfigError) as error:
        Recipe.from_dict(data)
    return str(error.value)


def pruning(**extra) -> dict:
    return {"pruning": {"schedule": {"type": "cubic", "final": 0.9}, **extra}}


@pytest.mark.parametrize(
    "regularizer,field",
    [
        ({"type": "l1", "strength": float("inf")}, "strength"),
        ({"type": "l1", "strength": float("inf"), "proximal": True}, "strength"),
        ({"type": "l1", "strength": 5.0}, "strength"),
        ({"type": "l0", "strength": float("inf")}, "strength"),
        ({"type": "l0", "strength": 1e-4, "lr": 1e308}, "lr"),
        ({"type": "sr_ste", "decay": float("inf")}, "decay"),
        ({"type": "sr_ste", "decay": 1e308}, "decay"),
        ({"type": "soft_movement", "strength": float("inf")}, "strength"),
        ({"type": "soft_movement", "strength": 1.0, "init": 1e308}, "init"),
        ({"type": "soft_movement", "strength": 1.0, "lr": float("nan")}, "lr"),
        ({"type": "topk_movement", "schedule": {"type": "cubic", "final": 0.5}, "init": 1e308}, "init"),
        ({"type": "l0", "strength": 1e-4, "seed": 1e30}, "seed"),
        ({"type": "l0", "strength": 1e-4, "droprate_init": 0.95}, "droprate_init"),
    ],
)
def test_regularizer_numbers_are_bounded(regularizer, field):
    message = refused({"regularizer": regularizer})
    assert message.startswith(f"recipe.regularizer.{field}:")


@pytest.mark.parametrize(
    "options,problem",
    [
        ({"seed": "0"}, "valid integer"),
        ({"seed": 1e30}, "valid integer"),
        ({"seed": -1}, "greater than or equal to 0"),
        ({"seed": True}, "valid integer"),
        ({"sed": 0}, "no option 'sed'"),
    ],
)
def test_random_criterion_options(options, problem):
    message = refused(pruning(criterion="random", criterion_options=options))
    assert message.startswith(f"recipe.pruning.criterion_options.{next(iter(options))}:") and problem in message


@pytest.mark.parametrize(
    "criterion,options",
    [("snip", {"batches": 1e30}), ("snip", {"batches": 10**9}), ("synflow", {"rounds": 10000}), ("obd", {"samples": 0}), ("grasp", {"batches": "1"})],
)
def test_probing_criterion_counts_are_bounded(criterion, options):
    message = refused(pruning(criterion=criterion, criterion_options=options))
    assert message.startswith(f"recipe.pruning.criterion_options.{next(iter(options))}:")


def test_valid_criterion_options_pass():
    recipe = Recipe.from_dict(pruning(criterion="obd", criterion_options={"batches": 2, "samples": 3, "seed": 4}))
    assert recipe.pruning.build_criterion().samples == 3


@pytest.mark.parametrize(
    "section,field",
    [
        ({"rewind": {"seed": 1e30}}, "rewind.seed"),
        ({"rewind": {"seed": 10**30}}, "rewind.seed"),
        ({"rewind": {"seed": "0"}}, "rewind.seed"),
        ({"rewind": {"to": float("inf")}}, "rewind.to"),
        ({"granularity": {"type": "block", "shape": [1000000, 1]}}, "granularity.shape.0"),
        ({"granularity": {"type": "block", "shape": [4.0, 1]}}, "granularity.shape.0"),
        ({"splice": {"band": float("nan")}}, "splice.band"),
    ],
)
def test_pruning_numbers_are_bounded(section, field):
    assert refused(pruning(**section)).startswith(f"recipe.pruning.{field}:")


@pytest.mark.parametrize(
    "schedule,field",
    [
        ({"type": "polynomial", "final": 0.9, "power": float("nan")}, "power"),
        ({"type": "polynomial", "final": 0.9, "power": 0}, "power"),
        ({"type": "iterative", "keep": 0.01, "rounds": 9}, "rounds"),
        ({"type": "iterative", "keep": 0.8, "rounds": 10**6}, "rounds"),
        ({"type": "iterative", "keep": 0.8, "rounds": True}, "rounds"),
        ({"type": "cubic", "final": 0.9, "begin": 0.5, "end": 0.2}, ""),
        ({"type": "cubic", "final": 0.5, "initial": 0.7}, ""),
        ({"type": "cubic", "final": 0.9, "end": 3.0}, "end"),
        ({"type": "cubic", "final": 0.9, "every": 0}, "every"),
        ({"type": "cubic", "final": 0.9, "begin": 1.5, "end": 20, "unit": "step"}, "begin"),
        ({"type": "one_shot", "sparsity": 0.5, "at": float("inf"), "unit": "step"}, "at"),
    ],
)
def test_schedule_numbers_are_checked_at_validation(schedule, field):
    message = refused({"pruning": {"schedule": schedule}})
    assert message.startswith("recipe.pruning.schedule" + (f".{field}:" if field else ":"))


def test_iterative_names_the_largest_reachable_round_count():
    message = refused({"pruning": {"schedule": {"type": "iterative", "keep": 0.01, "rounds": 9}}})
    assert "at most 1 rounds with keep 0.01" in message


def test_version_must_be_a_number():
    assert refused({**pruning(), "version": True}).startswith("recipe.version:")
    assert Recipe.from_dict({**pruning(), "version": 1}).version == 1


def test_flags_are_not_numbers():
    assert refused({**pruning(), "scope": {"skip_last": 1}}).startswith("recipe.scope.skip_last:")


def test_structured_schedule_errors_name_their_section():
    recipe = Recipe.from_dict({"structured": {"schedule": {"type": "cubic", "final": 0.4, "begin": 1, "end": 2, "unit": "epoch"}}})
    with pytest.raises(ConfigError) as error:
        recipe.structured.schedule.build(TrainingLength())
    assert error.value.field == "structured.schedule.begin"
    assert refused({"structured": {"schedule": {"type": "cubic", "final": 0.4, "power": float("nan")}}}).startswith(
        "recipe.structured.schedule.power:"
    )


def test_topk_schedule_errors_name_their_section():
    recipe = Recipe.from_dict({"regularizer": {"type": "topk_movement", "schedule": {"type": "cubic", "final": 0.5, "end": 3, "unit": "epoch"}}})
    with pytest.raises(ConfigError) as error:
        recipe.regularizer.build(TrainingLength())
    assert error.value.field.startswith("regularizer.schedule.")


def test_schedule_built_alone_names_pruning_section():
    recipe = Recipe.from_dict({"pruning": {"schedule": {"type": "cubic", "final": 0.4, "end": 1, "unit": "epoch"}}})
    with pytest.raises(ConfigError) as error:
        recipe.pruning.schedule.build(TrainingLength())
    assert error.value.field.startswith("pruning.schedule.")


def test_cross_section_conflict_names_sections_not_contents():
    message = refused({**pruning(), "regularizer": {"type": "l0", "strength": 1e-4}})
    assert message.startswith("recipe: got ['pruning', 'regularizer']")
    assert "'schedule'" not in message


def test_structured_numbers_are_bounded():
    base = {"schedule": {"type": "cubic", "final": 0.4}}
    assert refused({"structured": {**base, "round_to": 10**9}}).startswith("recipe.structured.round_to:")
    assert refused({"structured": {**base, "regularizer": {"type": "group_lasso", "strength": float("inf")}}}).startswith(
        "recipe.structured.regularizer.strength:"
    )
    assert refused({"structured": {**base, "target": {"macs": float("nan")}}}).startswith("recipe.structured.target.macs:")


def test_duplicate_yaml_key_is_named(tmp_path: Path):
    path = tmp_path / "recipe.yaml"
    path.write_text("pruning:\n  schedule: {type: cubic, final: 0.5}\n  criterion: magnitude\n  criterion: random\n")
    with pytest.raises(ConfigError) as error:
        Recipe.from_yaml(path)
    assert "'criterion' appears twice" in str(error.value) and "line 4" in str(error.value)


def test_yaml_merge_keys_may_override(tmp_path: Path):
    path = tmp_path / "recipe.yaml"
    path.write_text("base: &s {type: cubic, final: 0.5}\npruning:\n  schedule:\n    <<: *s\n    final: 0.7\n")
    data = read_yaml_mapping(path)
    assert data["pruning"]["schedule"]["final"] == 0.7


def test_channel_removal_with_nm_needs_round_to_a_multiple_of_m():
    nm = {"schedule": {"type": "linear", "final": 0.5}, "granularity": "2:4"}
    channels = {"schedule": {"type": "cubic", "final": 0.4}}
    message = refused({"pruning": nm, "structured": channels})
    assert message.startswith("recipe: got ['pruning', 'structured']") and "structured.round_to a multiple of 4" in message
    assert refused({"pruning": nm, "structured": {**channels, "round_to": 6}}).startswith("recipe:")
    assert Recipe.from_dict({"pruning": nm, "structured": {**channels, "round_to": 8}}).structured.round_to == 8
