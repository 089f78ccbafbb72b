"""A method's recipe at one column of the comparison: the shipped recipe with its final sparsity set to the target."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pruneaware.compare.spec import MethodSpec
from pruneaware.core.errors import ConfigError
from pruneaware.recipe.shipped import default_recipe_path
from pruneaware.recipe import Recipe, read_yaml_mapping

_TARGET_FIELD = {"one_shot": "sparsity", "constant": "sparsity", "linear": "final", "polynomial": "final", "cubic": "final", "exponential": "final"}
_SEED_FIELDS = (("pruning", "criterion_options", "seed"), ("pruning", "rewind", "seed"), ("regularizer", "seed"))


def method_recipe(method: MethodSpec, sparsity: float, seed: int) -> tuple[Recipe, str]:
    """The recipe ``method`` runs to reach ``sparsity`` with run seed ``seed``, and a note of what was set to get there."""
    data = _recipe_mapping(method.recipe)
    for path, value in method.overrides.items():
        _assign(data, path.split("."), value, method)
    for field in _SEED_FIELDS:  # the recipe's own random choices (RigL's topology, L0's noise) vary with the run seed
        parent = _find(data, field[:-1])
        if isinstance(parent, dict) and field[-1] in parent:
            parent[field[-1]] = int(parent[field[-1]]) + seed
    setting = _set_target(data, method, sparsity)
    data["name"] = f"{data.get('name', method.recipe)}@{sparsity:g}"
    try:
        return Recipe.from_dict(data), setting
    except ConfigError as error:
        raise ConfigError(f"method {method.label!r} at sparsity {sparsity:g}: {error.field}", error.value, error.expected) from None


def _recipe_mapping(source: str) -> dict[str, Any]:
    path = Path(source) if source.endswith((".yaml", ".yml")) else default_recipe_path(source)
    data = copy.deepcopy(read_yaml_mapping(path))
    data.pop("train", None)  # the comparison decides training
    return data


def _set_target(data: dict[str, Any], method: MethodSpec, sparsity: float) -> str:
    """Write ``sparsity`` into the field that decides the final sparsity; returns a short note of the value set."""
    regularizer = data.get("regularizer") or {}
    if regularizer.get("type") == "l0":
        if sparsity not in method.strengths:
            raise ConfigError(f"method {method.label!r}.strengths", method.strengths, f"an L0 penalty strength for sparsity {sparsity:g} (L0 has no sparsity target)")
        regularizer["strength"] = float(method.strengths[sparsity])
        return f"strength={regularizer['strength']:g}"
    if regularizer.get("type") == "sr_ste":
        fixed = 1.0 - regularizer.get("n", 2) / regularizer.get("m", 4)
        if abs(fixed - sparsity) > 1e-9:
            raise ConfigError(f"method {method.label!r}.sparsities", sparsity, f"only {fixed:g}: N:M sparsity is fixed at 1 - N/M")
        return f"{regularizer.get('n', 2)}:{regularizer.get('m', 4)}"
    schedule = (data.get("pruning") or {}).get("schedule")
    if not isinstance(schedule, dict):
        raise ConfigError(f"method {method.label!r}.recipe", method.recipe, "a recipe with a pruning schedule, an l0 or an sr_ste regularizer")
    if schedule.get("type") == "iterative":  # rounds stay as shipped; each keeps the same share, compounding to the target
        rounds = int(schedule["rounds"])
        schedule["keep"] = (1.0 - sparsity) ** (1.0 / rounds)
        return f"{rounds} rounds keep={schedule['keep']:.4f}"
    field = _TARGET_FIELD.get(schedule.get("type"))
    if field is None:
        raise ConfigError(f"method {method.label!r}.recipe", schedule.get("type"), sorted({*_TARGET_FIELD, "iterative"}))
    schedule[field] = sparsity
    return ""


def _find(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _assign(data: dict[str, Any], path: list[str], value: Any, method: MethodSpec) -> None:
    for key in path[:-1]:
        child = data.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"method {method.label!r}.overrides", ".".join(path), f"a path through recipe sections; {key!r} is a value")
        data = child
    data[path[-1]] = value
