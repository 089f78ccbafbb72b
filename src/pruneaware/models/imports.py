"""``package.module:function`` references from a recipe or the command line, imported from the user's own code."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from pruneaware.core.errors import ConfigError


def is_reference(text: str) -> bool:
    """True for ``package.module:attribute`` (a colon that is not part of a Windows drive or a URL)."""
    module, _, attribute = text.partition(":")
    return bool(module) and bool(attribute) and "/" not in text and "\\" not in text and all(part.isidentifier() for part in [*module.split("."), attribute])


def import_object(reference: str, field: str) -> Callable[..., Any]:
    """The callable named by ``reference``; the current directory is importable, as it is for ``python -m``."""
    if not is_reference(reference):
        raise ConfigError(field, reference, "'package.module:function', importable from the current directory or the installed packages")
    module_name, _, attribute = reference.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module may raise anything while importing
        raise ConfigError(field, reference, f"an importable module; importing {module_name!r} failed with {type(error).__name__}: {error}") from None
    target = getattr(module, attribute, None)
    if not callable(target):
        raise ConfigError(field, reference, f"a callable {attribute!r} in module {module_name!r} ({getattr(module, '__file__', '?')})")
    return target
