"""Validation of a recipe's ``criterion_options`` against the chosen criterion's own parameters.

Options are checked when the recipe is validated, not when the criterion is built mid-run: an
unknown name, a quoted number (``seed: "0"``) or an absurd count (``batches: 1e30``) is refused
with the option named. Well-known option names get the recipe's bounded types; others are strict
in the type the criterion declares.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, Strict, TypeAdapter, ValidationError

from pruneaware.criteria import CRITERIA
from pruneaware.recipe.bounds import Count, Flag, Seed

BY_NAME: dict[str, Any] = {"seed": Seed, "batches": Count, "samples": Count, "rounds": Count}
"""Bounds shared by every criterion that takes an option of this name."""

BY_TYPE: dict[Any, Any] = {
    int: Annotated[int, Strict()],
    float: Annotated[float, Strict(), Field(allow_inf_nan=False)],
    bool: Flag,
}


class OptionError(ValueError):
    """One criterion option is unknown or out of range; carries its name so the error can point at it."""

    def __init__(self, option: str, value: object, message: str):
        self.option = option
        self.value = value
        super().__init__(message)


def check_criterion_options(criterion: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` validated for ``criterion``; an OptionError naming the option and what it accepts otherwise."""
    accepted = _accepted(criterion)
    checked: dict[str, Any] = {}
    for option, value in options.items():
        if option not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise OptionError(option, value, f"no option {option!r} for criterion {criterion!r} (it accepts: {known})")
        try:
            checked[option] = TypeAdapter(accepted[option]).validate_python(value)
        except ValidationError as error:
            problem = error.errors()[0]["msg"].removeprefix("Input should be ")
            raise OptionError(option, value, f"{problem} for option {option!r} of criterion {criterion!r}") from None
    return checked


def _accepted(criterion: str) -> dict[str, Any]:
    """Each keyword the criterion's factory takes, with the type its value is validated as."""
    factory = CRITERIA.get(criterion)
    function = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(function)
    accepted = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        accepted[name] = BY_NAME.get(name, BY_TYPE.get(hints.get(name), Any))
    return accepted
