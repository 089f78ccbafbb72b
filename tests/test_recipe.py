"""Recipes: validation with field-naming errors, YAML round trips, method helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pruneaware import granularity as gran
from pruneaware import schedules
from pruneaware.core.errors import ConfigError
from pruneaware.methods import gradual_magnitude, l1_sparsity, one_shot
from pruneaware.recipe import Recipe, TrainingLength
from pruneaware.regularizers.base import L1

RECIPES_DIR = Path(__file__).resolve().parents[1] / "src" / "pruneaware" / "recipes"


def cubic(final: float = 0.9, **extra) -> dict:
    return {"pruning": {"schedule": {"type": "cubic", "final": final, **extra}}}


def full_recipe() -> dict:
    return {
        "version": 1,
        "name": "everything",
        "pruning": {
            "schedule": {"type": "polynomial", "final": 0.8, "initial": 0.1, "begin": 2, "end": 40, "every": 3, "unit": "step", "power": 2.0},
            "criterion": "random",
            "criterion_options": {"seed": 7},
            "granularity": {"type": "block", "shape": [4, 4], "scope": "global"},
        },
        "scope": {"modules": ["Linear", "Conv2d"], "include": ["*"], "exclude": ["head"], "skip_last": False},
        "regularizer": {"type": "l1", "strength": 1e-4, "proximal": True},
    }


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


# -- building and round trips ---------------------------------------------------------------------


def test_from_dict_builds_typed_sections():
    recipe = Recipe.from_dict(full_recipe())
    assert recipe.name == "everything"
    assert recipe.pruning.criterion == "random"
    assert recipe.pruning.granularity.shape == (4, 4)
    assert recipe.scope.exclude == ("head",)
    schedule = recipe.pruning.schedule.build(TrainingLength())
    assert isinstance(schedule, schedules.Polynomial)
    assert schedule.update_steps()[0] == 2 and schedule.last_step == 40 and schedule.power == 2.0
    assert isinstance(recipe.pruning.granularity.build(), gran.Block)
    assert isinstance(recipe.regularizer.build(TrainingLength()), L1)
    assert recipe.pruning.build_criterion().state_dict().keys() == {"generator"}


@pytest.mark.parametrize(
    "data",
    [
        full_recipe(),
        cubic(),
        {"pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0.3}, "granularity": "2:4"}},
        {"pruning": {"schedule": {"type": "iterative", "rounds": 3, "keep": 0.5, "every": 0.2}}},
        {"pruning": {"schedule": {"type": "constant", "sparsity": 0.5}, "granularity": "element"}},
        {"regularizer": {"type": "l1", "strength": 0.01}},
    ],
)
def test_yaml_round_trip(tmp_path, data):
    recipe = Recipe.from_dict(data)
    loaded = Recipe.from_yaml(write(tmp_path, recipe.to_yaml()))
    assert loaded == recipe
    assert loaded.fingerprint() == recipe.fingerprint()
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_fingerprint_tracks_content():
    a = Recipe.from_dict(cubic(0.9))
    assert a.fingerprint() == Recipe.from_dict(cubic(0.9)).fingerprint()
    assert a.fingerprint() != Recipe.from_dict(cubic(0.8)).fingerprint()
    assert a.fingerprint() != Recipe.from_dict({**cubic(0.9), "name": "other"}).fingerprint()
    assert len(a.fingerprint()) == 12


def test_from_yaml_ignores_the_train_section(tmp_path):
    path = write(tmp_path, "pruning:\n  schedule: {type: cubic, final: 0.7}\ntrain:\n  epochs: 3\n")
    assert Recipe.from_yaml(path).pruning.schedule.final == 0.7
    assert Recipe.from_yaml(str(path)) == Recipe.from_yaml(path)


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    recipe = Recipe.from_yaml(path)
    assert any(part is not None for part in (recipe.pruning, recipe.structured, recipe.regularizer))


@pytest.mark.parametrize("shorthand,n,m", [("2:4", 2, 4), ("1:4", 1, 4), (" 4 : 8 ", 4, 8)])
def test_nm_shorthand(shorthand, n, m):
    recipe = Recipe.from_dict({"pruning": {"schedule": {"type": "linear", "final": 1 - n / m}, "granularity": shorthand}})
    assert recipe.pruning.granularity.type == "nm"
    assert (recipe.pruning.granularity.n, recipe.pruning.granularity.m) == (n, m)
    built = recipe.pruning.granularity.build()
    assert isinstance(built, gran.NM) and (built.n, built.m) == (n, m)


def test_nm_shorthand_in_yaml(tmp_path):
    path = write(tmp_path, "pruning:\n  granularity: '2:4'\n  schedule: {type: linear, final: 0.5}\n")
    assert Recipe.from_yaml(path).pruning.granularity.build() == gran.NM(2, 4)


def test_name_shorthands():
    assert Recipe.from_dict({**cubic(), "pruning": {**cubic()["pruning"], "granularity": "block"}}).pruning.granularity.shape == (1, 4)
    element = Recipe.from_dict({"pruning": {**cubic()["pruning"], "granularity": "element"}}).pruning.granularity
    assert element.type == "element" and element.scope == "global"


def test_defaults():
    recipe = Recipe.from_dict(cubic())
    assert recipe.version == 1
    assert recipe.pruning.criterion == "magnitude"
    assert recipe.pruning.granularity.type == "element"
    assert recipe.scope.skip_last is True
    assert recipe.regularizer is None
    assert recipe.pruning.schedule.unit == "fraction"


def test_recipes_are_immutable():
    recipe = Recipe.from_dict(cubic())
    with pytest.raises(Exception):
        recipe.name = "changed"  # type: ignore[misc]


# -- errors --------------------------------------------------------------------------------------


def config_error(data: dict) -> str:
    with pytest.raises(ConfigError) as error:
        Recipe.from_dict(data)
    return str(error.value)


def test_unknown_criterion_names_field_and_choices():
    message = config_error({**cubic(), "pruning": {**cubic()["pruning"], "criterion": "magnitud"}})
    assert "pruning.criterion" in message and "'magnitud'" in message
    for name in ("magnitude", "taylor", "movement", "random"):
        assert name in message


def test_unknown_schedule_type_names_field_and_choices():
    message = config_error({"pruning": {"schedule": {"type": "cubik", "final": 0.9}}})
    assert "pruning.schedule" in message and "cubik" in message
    for name in ("one_shot", "constant", "linear", "polynomial", "cubic", "exponential", "iterative"):
        assert name in message


def test_unknown_granularity_type_names_choices():
    message = config_error({"pruning": {**cubic()["pruning"], "granularity": "blok"}})
    assert "pruning.granularity" in message and "blok" in message
    for name in ("element", "block", "nm"):
        assert name in message


@pytest.mark.parametrize(
    "data,field",
    [
        ({"pruning": {**cubic()["pruning"], "criterio": "taylor"}}, "recipe.pruning.criterio"),
        ({**cubic(), "scopes": {}}, "recipe.scopes"),
        ({**cubic(), "scope": {"exclud": ["x"]}}, "recipe.scope.exclud"),
        ({"pruning": {"schedule": {"type": "cubic", "final": 0.9, "evry": 2}}}, "recipe.pruning.schedule.evry"),
    ],
)
def test_unknown_field_is_named(data, field):
    message = config_error(data)
    assert message.startswith(field + ":")
    assert "no such field" in message


def test_typo_in_a_required_field_shows_both():
    message = config_error({"pruning": {"schedule": {"type": "cubic", "finall": 0.9}}})
    assert "final" in message and "finall" in message


@pytest.mark.parametrize("value", [1.2, 1.0, 0.9999999, -0.1, float("nan"), float("inf"), True])
def test_sparsity_out_of_range(value):
    message = config_error(cubic(value))
    assert message.startswith("recipe.pruning.schedule.final:")
    assert "[0, 0.999]" in message or "finite" in message or "valid number" in message
    message = config_error({"pruning": {"schedule": {"type": "one_shot", "sparsity": value}}})
    assert message.startswith("recipe.pruning.schedule.sparsity:")


def test_n_not_below_m():
    for granularity in ("4:4", "5:4", {"type": "nm", "n": 8, "m": 4}):
        message = config_error({"pruning": {"schedule": {"type": "linear", "final": 0.5}, "granularity": granularity}})
        assert "granularity" in message and "N < M" in message
    message = config_error({"pruning": {"schedule": {"type": "linear", "final": 0.5}, "granularity": {"type": "nm", "n": 1, "m": 1}}})
    assert "granularity" in message and "M >= 2" in message


def test_malformed_nm_shorthand():
    message = config_error({"pruning": {"schedule": {"type": "linear", "final": 0.5}, "granularity": "2:x"}})
    assert "granularity" in message and "'2:x'" in message and "N:M" in message


@pytest.mark.parametrize("final", [0.9, 0.25, 0.0])
def test_nm_requires_matching_final_sparsity(final):
    message = config_error({"pruning": {"schedule": {"type": "cubic", "final": final}, "granularity": "2:4"}})
    assert "recipe.pruning" in message and "final" in message and "0.5" in message and str(final) in message


def test_nm_with_matching_one_shot_is_accepted():
    recipe = Recipe.from_dict({"pruning": {"schedule": {"type": "one_shot", "sparsity": 0.75}, "granularity": "1:4"}})
    assert recipe.pruning.schedule.final == 0.75


def test_recipe_needs_pruning_or_regularizer():
    message = config_error({"name": "empty"})
    assert "pruning" in message and "regularizer" in message


def test_invalid_regularizer_strength():
    message = config_error({"regularizer": {"type": "l1", "strength": -1.0}})
    assert "regularizer" in message and "strength" in message


def test_wrong_version():
    message = config_error({**cubic(), "version": 2})
    assert "version" in message


def test_missing_yaml_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as error:
        Recipe.from_yaml(missing)
    assert "recipe" in str(error.value) and "nope.yaml" in str(error.value)


@pytest.mark.parametrize("text", ["pruning: [unclosed\n", "a: b: c\n", "pruning:\n  - x\n - y\n"])
def test_malformed_yaml(tmp_path, text):
    with pytest.raises(ConfigError) as error:
        Recipe.from_yaml(write(tmp_path, text))
    assert "YAML" in str(error.value)


@pytest.mark.parametrize("text", ["- just\n- a list\n", "42\n", ""])
def test_yaml_that_is_not_a_mapping(tmp_path, text):
    with pytest.raises(ConfigError) as error:
        Recipe.from_yaml(write(tmp_path, text))
    assert "mapping" in str(error.value)


def test_errors_from_yaml_name_the_field(tmp_path):
    path = write(tmp_path, "pruning:\n  criterion: magnitud\n  schedule: {type: cubic, final: 0.9}\n")
    with pytest.raises(ConfigError) as error:
        Recipe.from_yaml(path)
    assert "pruning.criterion" in str(error.value)


def test_criterion_options_are_checked_at_validation():
    message = config_error({"pruning": {**cubic()["pruning"], "criterion": "magnitude", "criterion_options": {"seed": 1}}})
    assert message.startswith("recipe.pruning.criterion_options.seed:") and "no option 'seed'" in message


# -- time units ----------------------------------------------------------------------------------


def test_times_resolve_in_each_unit():
    length = TrainingLength(steps_per_epoch=10, total_steps=200)
    for unit, begin, end, expected in [("step", 20, 120, (20, 120)), ("epoch", 2, 12, (20, 120)), ("fraction", 0.1, 0.6, (20, 120))]:
        recipe = Recipe.from_dict({"pruning": {"schedule": {"type": "linear", "final": 0.5, "begin": begin, "end": end, "unit": unit}}})
        schedule = recipe.pruning.schedule.build(length)
        assert (schedule.update_steps()[0], schedule.last_step) == expected


def test_every_defaults_to_one_epoch_or_one_step():
    recipe = Recipe.from_dict({"pruning": {"schedule": {"type": "linear", "final": 0.5, "begin": 0, "end": 30, "unit": "step"}}})
    assert recipe.pruning.schedule.build(TrainingLength(steps_per_epoch=10)).update_steps() == [0, 10, 20, 30]
    assert len(recipe.pruning.schedule.build(TrainingLength()).update_steps()) == 31


# -- methods ---------------------------------------------------------------------------------------


def test_gradual_magnitude_recipe():
    recipe = gradual_magnitude(0.8, begin=0.2, end=0.6)
    assert isinstance(recipe, Recipe)
    assert recipe.pruning.criterion == "magnitude"
    assert recipe.pruning.schedule.type == "cubic" and recipe.pruning.schedule.final == 0.8
    assert recipe.pruning.granularity.scope == "global"
    schedule = recipe.pruning.schedule.build(TrainingLength(total_steps=100))
    assert schedule.update_steps()[0] == 20 and schedule.last_step == 60
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert gradual_magnitude(0.5, scope="layer").pruning.granularity.scope == "layer"
    with pytest.raises(ConfigError):
        gradual_magnitude(1.5)


def test_one_shot_recipe():
    recipe = one_shot(0.7, at=0, unit="step")
    assert recipe.pruning.schedule.type == "one_shot"
    assert recipe.pruning.schedule.build(TrainingLength()).update_steps() == [0]
    assert one_shot(0.7, criterion="random").pruning.criterion == "random"
    with pytest.raises(ConfigError):
        one_shot(0.7, criterion="nope")


def test_l1_sparsity_recipe():
    recipe = l1_sparsity(1e-3)
    assert recipe.pruning is None
    assert recipe.regularizer.strength == 1e-3 and recipe.regularizer.proximal is True
    with_cut = l1_sparsity(1e-3, sparsity=0.9, at=0.5, proximal=False)
    assert with_cut.pruning.schedule.final == 0.9
    assert with_cut.pruning.schedule.build(TrainingLength(total_steps=40)).update_steps() == [20]
    assert with_cut.regularizer.proximal is False
    with pytest.raises(ConfigError):
        l1_sparsity(0.0)
