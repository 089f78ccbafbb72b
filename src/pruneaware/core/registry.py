"""Name -> factory registries, one class for every kind chosen by name (criteria, stages, methods, models, ...), and the stage registry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pruneaware.core.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Registry(Generic[T]):
    """A named collection of factories; an unknown name raises a ConfigError listing the valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator adding a factory under ``name``; re-registering a name replaces it with a warning."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                log.warning("%s %r registered again; the new definition replaces the old one", self.kind, name)
            self._factories[name] = factory
            return factory

        return add

    def get(self, name: str, field: str | None = None) -> Callable[..., T]:
        """The factory registered as ``name``."""
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(field or self.kind, name, sorted(self._factories)) from None

    def build(self, name: str, *args: object, **kwargs: object) -> T:
        """Call the factory registered as ``name``."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


STAGES: Registry[Any] = Registry("stages")
"""Stage factories by name: every stage a recipe's ``stages:`` list may name, built-in or registered by the user."""


def register_stage(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a stage factory (often the Stage class itself) under ``name`` for use in ``stages:``.

    The factory is called as ``factory(**options)`` with the options of the ``stages:`` entry.
    """
    return STAGES.register(name)
