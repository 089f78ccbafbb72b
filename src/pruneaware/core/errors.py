"""The exceptions pruneaware raises: one small hierarchy, each message naming the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterable


class PruneawareError(Exception):
    """Base class of every error pruneaware raises on purpose."""


class ConfigError(PruneawareError, ValueError):
    """A recipe or argument holds a bad value: names the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, expected: str | Iterable[str]):
        if not isinstance(expected, str):
            expected = "one of " + ", ".join(repr(choice) for choice in expected)
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field}: got {value!r}; expected {expected}")


class ScopeError(PruneawareError, LookupError):
    """A scope (module types, name patterns) selects no parameter, or a pattern matches nothing."""


class StateError(PruneawareError, RuntimeError):
    """A state dict or checkpoint does not fit the pruner, model or run it is loaded into."""


class UsageError(PruneawareError, RuntimeError):
    """The API was called in an order or a way it does not support."""


class TraceError(PruneawareError, RuntimeError):
    """The dependency graph cannot trace a model, or a structural edit cannot be applied to it."""
