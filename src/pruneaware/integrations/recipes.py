"""The recipe a callback is given: a shipped recipe's name, a YAML path, a dict or a Recipe, validated at once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pruneaware.core.errors import ConfigError
from pruneaware.job.spec import default_recipe_path
from pruneaware.recipe import Recipe


def resolve_recipe(recipe: Recipe | Mapping[str, Any] | str | Path) -> Recipe:
    """A Recipe from any accepted form; a bare name is a shipped recipe (``"default"``, ``"structured"``, ...)."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(dict(recipe))
    if isinstance(recipe, Path) or (isinstance(recipe, str) and (recipe.endswith((".yaml", ".yml")) or Path(recipe).exists())):
        return Recipe.from_yaml(recipe)
    if isinstance(recipe, str):
        return Recipe.from_yaml(default_recipe_path(recipe))  # a ConfigError listing the shipped names if unknown
    raise ConfigError("recipe", type(recipe).__name__, "a shipped recipe's name, the path of a YAML recipe, a dict or a Recipe")
