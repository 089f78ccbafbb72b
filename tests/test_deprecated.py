"""Old module paths still import for one release: same module, one DeprecationWarning; the package itself never uses them."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

import pruneaware as pa
from pruneaware._deprecated import MOVED, new_path

ROOT = Path(__file__).resolve().parents[1]


def _forget(monkeypatch: pytest.MonkeyPatch, old: str) -> None:
    """Make ``old`` look never imported, so importing it runs the alias again."""
    monkeypatch.delitem(sys.modules, old, raising=False)
    parent, _, child = old.rpartition(".")
    if child in vars(sys.modules[parent]):  # hasattr() would import the old path through the package's __getattr__
        monkeypatch.delattr(sys.modules[parent], child)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_imports_the_new_module_with_a_warning(monkeypatch: pytest.MonkeyPatch, old: str) -> None:
    new = importlib.import_module(MOVED[old])
    _forget(monkeypatch, old)
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} is deprecated") + ".*" + re.escape(MOVED[old])):
        module = importlib.import_module(old)
    assert module is new
    assert new.__spec__.name == MOVED[old]  # the new module keeps its own identity
    assert importlib.import_module(old) is new  # a second import is silent and the same


def test_from_import_of_an_old_path_gives_the_same_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    from pruneaware.core.masks import MaskSet

    _forget(monkeypatch, "pruneaware.masks")
    with pytest.warns(DeprecationWarning, match="pruneaware.masks"):
        from pruneaware.masks import MaskSet as old_mask_set
    assert old_mask_set is MaskSet


def test_old_path_read_as_an_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    _forget(monkeypatch, "pruneaware.errors")
    with pytest.warns(DeprecationWarning, match="pruneaware.errors"):
        errors = pa.errors
    assert errors.ConfigError is pa.ConfigError
    with pytest.raises(AttributeError, match="no_such_thing"):
        pa.no_such_thing  # noqa: B018


def test_submodules_of_a_moved_package_follow_it() -> None:
    moved_packages = [old for old in MOVED if (ROOT / "src" / Path(*MOVED[old].split("."))).is_dir()]
    for old in moved_packages:
        assert new_path(f"{old}.anything") == f"{MOVED[old]}.anything"
    assert new_path("pruneaware.core.masks") is None


def test_the_package_uses_no_old_path() -> None:
    olds = "|".join(re.escape(old) for old in MOVED)
    children = "|".join(old.rpartition(".")[2] for old in MOVED if old.count(".") == 1)
    pattern = re.compile(rf"^\s*(from|import)\s+({olds})\b|^\s*from pruneaware import .*\b({children})\b")
    offenders = []
    for folder in ("src", "tests", "bench", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name in ("_deprecated.py", Path(__file__).name):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "old module paths in use:\n" + "\n".join(offenders)


def test_pa_recipes_is_the_methods_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _forget(monkeypatch, "pruneaware.recipes")
    with pytest.warns(DeprecationWarning, match="pruneaware.recipes is deprecated.*pruneaware.methods"):
        recipes = pa.recipes
    assert recipes is pa.methods
    assert recipes.gradual_magnitude is pa.methods.gradual_magnitude
