"""What the method builders share: the layer allocation keyword, with the older spelling still accepted."""

from __future__ import annotations

import warnings
from typing import Any


def allocation_of(allocation: str, recipe_fields: dict[str, Any]) -> str:
    """The element granularity's allocation; a string ``scope=`` (its earlier name) is taken as one, with a warning.

    ``scope=`` given as a mapping is the recipe's own scope section and stays in ``recipe_fields``.
    """
    if isinstance(recipe_fields.get("scope"), str):
        warnings.warn("scope='...' as the layer allocation is deprecated; use allocation='...' (scope= is the recipe's scope section)", DeprecationWarning, stacklevel=3)
        return recipe_fields.pop("scope")
    return allocation
