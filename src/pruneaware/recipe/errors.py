"""Schema errors as one ConfigError: the field path as the user wrote it, the value, and what is allowed."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pruneaware.criteria.options import OptionError
from pruneaware.core.errors import ConfigError


def config_error(error: ValidationError, data: Any) -> ConfigError:
    """The first schema error as one ConfigError naming the field as written in the recipe, its value and what is allowed."""
    first = error.errors()[0]
    path = _field_path(first["loc"], data)
    message = first["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
    if first["type"] == "extra_forbidden":
        message = "no such field; check the spelling against the recipe reference in docs/recipes.md"
    value = first.get("input")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, OptionError):  # point at the one criterion option
        path, value = [*path, cause.option], cause.value
    elif isinstance(value, dict):  # a rule across fields: name them, not their contents
        value = sorted(value)
    field = "recipe." + ".".join(path) if path else "recipe"
    more = error.error_count() - 1
    return ConfigError(field, value, message + (f" (and {more} more problem(s))" if more else ""))


def _field_path(loc: tuple[Any, ...], data: Any) -> list[str]:
    """``loc`` as the user wrote it: pydantic's union tags (``schedule.cubic.final``) are left out."""
    path: list[str] = []
    for part in loc:
        if isinstance(data, dict) and part not in data and data.get("type") == part:
            continue  # the discriminator's tag, not a key of the recipe
        path.append(str(part))
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
    return path
