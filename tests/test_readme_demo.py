"""The README's demo figures agree with docs/demo.json, and a rerun of the demo agrees with both within the stated spread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.readme_demo import CHECKED, JSON_PATH, README, readme_tables, render_tables, run_demo


def test_readme_tables_are_the_ones_docs_demo_json_renders() -> None:
    tables = readme_tables(README.read_text())
    for table in render_tables(json.loads(JSON_PATH.read_text())):
        assert table in tables, f"README.md lacks this table from docs/demo.json (run python -m tests.readme_demo):\n{table}"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["default", "structured"])
def test_demo_rerun_matches_readme_within_the_seed_spread(recipe: str, tmp_path: Path) -> None:
    recorded = json.loads(JSON_PATH.read_text())[recipe]
    measured = run_demo(recipe, 0, tmp_path)
    for phase in ("dense", "pruned"):
        for key in CHECKED[recipe]:
            expected, tolerance = recorded["seeds"]["0"][phase][key], recorded["tolerance"][phase][key]
            assert abs(measured[phase][key] - expected) <= tolerance + 1e-9, f"{recipe} {phase} {key}: {measured[phase][key]} vs {expected} ± {tolerance}"
