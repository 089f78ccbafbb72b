"""Old module paths kept importable for one release: each resolves to the module that replaced it, with a DeprecationWarning.

Importing an old path (``import pruneaware.core.masks``) or reading it as an attribute
(``pruneaware.core.masks``) gives the new module itself, so every object is the same; the warning is
issued once per old path, when it is first imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

REMOVAL = "0.3"

MOVED: dict[str, str] = {
    "pruneaware.allocation": "pruneaware.granularity.allocation",
    "pruneaware.criterion_options": "pruneaware.criteria.options",
    "pruneaware.errors": "pruneaware.core.errors",
    "pruneaware.integrations.recipes": "pruneaware.recipe.shipped",
    "pruneaware.llm.criterion": "pruneaware.criteria.wanda",
    "pruneaware.llm.recipes": "pruneaware.llm.finetune",
    "pruneaware.masks": "pruneaware.core.masks",
    "pruneaware.materialized": "pruneaware.core.materialized",
    "pruneaware.optimizer_hooks": "pruneaware.core.optimizer_hooks",
    "pruneaware.probing": "pruneaware.criteria.probing",
    "pruneaware.probing.calibration": "pruneaware.core.calibration",
    "pruneaware.pruner": "pruneaware.core.driver",
    "pruneaware.recipe_bounds": "pruneaware.recipe.bounds",
    "pruneaware.recipes": "pruneaware.methods",
    "pruneaware.recipe_errors": "pruneaware.recipe.errors",
    "pruneaware.recipe_schedules": "pruneaware.recipe.schedules",
    "pruneaware.recipe_structured": "pruneaware.recipe.structured",
    "pruneaware.registry": "pruneaware.core.registry",
    "pruneaware.regrow": "pruneaware.rules.regrow",
    "pruneaware.reparam": "pruneaware.regularizers",
    "pruneaware.rewind": "pruneaware.rules.rewind",
    "pruneaware.scope": "pruneaware.core.scope",
    "pruneaware.splice": "pruneaware.rules.splice",
    "pruneaware.structured.importance": "pruneaware.criteria.channel",
    "pruneaware.structured.regularizers": "pruneaware.regularizers.channel",
    "pruneaware.summary": "pruneaware.measure.sparsity",
    "pruneaware.yaml_loading": "pruneaware.recipe.yaml_loading",
}
"""Old dotted path -> new dotted path; a moved package's submodules follow it (``old.sub`` -> ``new.sub``)."""


def new_path(old: str) -> str | None:
    """The module that replaced ``old``, or None when ``old`` did not move."""
    if old in MOVED:
        return MOVED[old]
    parent, _, child = old.rpartition(".")
    while parent:
        if parent in MOVED:
            return f"{MOVED[parent]}.{old[len(parent) + 1:]}"
        parent, _, _ = parent.rpartition(".")
    return None


class _AliasLoader(importlib.abc.Loader):
    """Puts the new module in ``sys.modules`` under the old name (the import system then returns it)."""

    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        warnings.warn(
            f"{old} is deprecated and will be removed in pruneaware {REMOVAL}; import {self.new} instead",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[old] = importlib.import_module(self.new)


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds old module paths before the path finder does (an old name may still be a folder, e.g. ``recipes/``)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = new_path(fullname) if fullname.startswith("pruneaware.") else None
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Let old module paths resolve (idempotent)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


def attribute(package: str, name: str) -> ModuleType:
    """``package.name`` read as an attribute when ``name`` is an old module path; AttributeError otherwise."""
    if f"{package}.{name}" not in MOVED:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return importlib.import_module(f"{package}.{name}")
