"""The recipes shipped with the package (YAML files in ``pruneaware/recipes/``), and a Recipe from any form a caller may give one in."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pruneaware.core.errors import ConfigError
from pruneaware.recipe.model import Recipe


def default_recipe_path(name: str = "default") -> Path:
    """A recipe shipped with the package (``pruneaware/recipes/<name>.yaml``); an unknown name lists the shipped ones."""
    path = Path(str(resources.files("pruneaware") / "recipes" / f"{name}.yaml"))
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError("recipe", name, shipped)
    return path


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
