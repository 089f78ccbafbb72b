"""The stage registry: every stage a recipe's ``stages:`` list may name, built-in or registered by the user."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pruneaware.registry import Registry

STAGES: Registry[Any] = Registry("stages")
"""Factories ``factory(recipe, ctx, **options) -> Stage`` by name."""


def register_stage(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a stage factory (often the Stage class itself) under ``name`` for use in ``stages:``.

    The factory is called as ``factory(**options)`` with the options of the ``stages:`` entry.
    """
    return STAGES.register(name)
