"""`pruneaware compare`: a tiny comparison on digits end to end, resuming, targets per recipe kind, and bad specs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from pruneaware.cli.main import main
from pruneaware.compare import ComparisonSpec, MethodSpec, markdown_table, plan_runs, read_records, run_comparison
from pruneaware.compare.spec import comparison_path
from pruneaware.compare.targets import method_recipe
from pruneaware.core.errors import ConfigError

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "model": "mlp",
    "epochs": 1,
    "seeds": 2,
    "sparsities": [0.5, 0.8],
    "train": {"lr": 0.003, "batch_size": 64},
    "methods": [
        {"label": "one-shot + FT", "recipe": "one_shot", "from_dense": True, "overrides": {"pruning.schedule.at": 0, "pruning.schedule.unit": "step"}},
        {"label": "GMP", "recipe": "default"},
        {"label": "IMP-rewind", "recipe": "imp", "train": {"lr_schedule": "constant"}},
        {"label": "L0", "recipe": "l0", "strengths": {0.5: 1e-3, 0.8: 1e-2}},
        {"label": "2:4 SR-STE", "recipe": "sr_ste_2_4", "sparsities": [0.5], "overrides": {"scope.exclude": []}},
    ],
}


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "comparison.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_tiny_comparison_writes_csv_table_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["compare", str(_write(tmp_path, TINY)), "--out", str(out)]) == 0
    with (out / "runs.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    # per seed: dense, 4 methods at 2 sparsities, SR-STE at 50% only
    assert len(rows) == 2 * (1 + 4 * 2 + 1)
    assert {row["seed"] for row in rows} == {"0", "1"}
    for row in rows:
        target, achieved = float(row["target_sparsity"]), float(row["achieved_sparsity"])
        if row["method"] in ("one-shot + FT", "GMP", "IMP-rewind", "2:4 SR-STE"):
            assert achieved == pytest.approx(target, abs=0.01), row  # counted from the weights
        assert 0.0 < float(row["accuracy"]) <= 1.0 and float(row["seconds"]) > 0
    assert all(row["setting"].startswith("strength=") for row in rows if row["method"] == "L0")
    table = (out / "table.md").read_text().splitlines()
    header = next(line for line in table if line.startswith("| method"))
    assert header.count("|") == 4  # method + two sparsity columns
    sr_ste = next(line for line in table if line.startswith("| 2:4 SR-STE"))
    assert sr_ste.rstrip(" |").endswith("n/a") and "±" in sr_ste
    assert (out / "accuracy_vs_sparsity.png").stat().st_size > 10_000
    assert not (out / "work").exists() or not any((out / "work").iterdir())  # per-run checkpoints removed when done


def test_resume_skips_finished_runs_and_retrains_only_missing_ones(tmp_path: Path) -> None:
    spec = ComparisonSpec.from_mapping({**TINY, "seeds": 1, "methods": TINY["methods"][:2]})
    out = tmp_path / "out"
    first = run_comparison(spec, out)
    assert len(first) == 1 + 2 * 2
    kept = [record for record in first if record.method != "GMP" or record.target_sparsity != 0.8]
    from pruneaware.compare.records import write_records

    write_records(out / "runs.csv", kept)  # as if the run was killed before GMP at 80%
    again = run_comparison(spec, out)
    assert len(again) == len(first)
    assert [r for r in again if r.key in {k.key for k in kept}] == kept  # finished rows untouched, not retrained
    assert run_comparison(spec, out) == again  # nothing left to do


def test_resume_refuses_a_folder_of_another_comparison(tmp_path: Path) -> None:
    spec = ComparisonSpec.from_mapping({**TINY, "seeds": 1, "epochs": 1, "methods": TINY["methods"][1:2], "sparsities": [0.5]})
    run_comparison(spec, tmp_path)
    with pytest.raises(ConfigError, match="same comparison settings"):
        run_comparison(spec.with_overrides(epochs=2), tmp_path)


def test_targets_reach_each_recipe_kind() -> None:
    imp, setting = method_recipe(MethodSpec(label="IMP", recipe="imp"), 0.95, seed=0)
    assert imp.pruning.schedule.final == pytest.approx(0.95) and "4 rounds" in setting
    gmp, _ = method_recipe(MethodSpec(label="GMP", recipe="default", overrides={"pruning.criterion": "movement"}), 0.8, seed=0)
    assert gmp.pruning.schedule.final == 0.8 and gmp.pruning.criterion == "movement"
    rigl, _ = method_recipe(MethodSpec(label="RigL", recipe="rigl"), 0.5, seed=2)
    assert rigl.pruning.schedule.sparsity == 0.5 and rigl.pruning.criterion_options["seed"] == 2  # topology varies with the seed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": [{"label": "X", "recipe": "no_such_method"}]}, "recipe"),
        ({"sparsities": [0.5, 1.0]}, r"\[0, 1\)"),
        ({"sparsities": [-0.1]}, r"\[0, 1\)"),
        ({"seeds": 0}, "at least 1 seed"),
        ({"seeds": []}, "seeds"),
        ({"methods": [{"label": "L0", "recipe": "l0", "strengths": {0.5: 1e-3}}]}, "L0 penalty strength for sparsity 0.8"),
        ({"methods": [{"label": "SR", "recipe": "sr_ste_2_4"}]}, "only 0.5"),
        ({"methods": [{"label": "G", "recipe": "default", "train": {"epochs": 9}}]}, "same for every method"),
        ({"methods": [{"label": "G", "recipe": "default", "sparsities": [0.7]}]}, "not columns"),
        ({"methods": [{"label": "dense", "recipe": "default"}]}, "distinct method labels"),
    ],
)
def test_bad_specs_fail_before_training_with_one_line(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_runs(ComparisonSpec.from_mapping({**TINY, **change}))
    assert main(["compare", str(_write(tmp_path, {**TINY, **change})), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o" / "runs.csv").exists()


def test_shipped_comparisons_plan_every_method() -> None:
    for name, sparsity_columns in (("mnist1d", 4), ("mnist_lenet300", 4)):
        spec = ComparisonSpec.from_yaml(comparison_path(name))
        runs = plan_runs(spec)
        labels = {run.method for run in runs}
        assert {"dense", "one-shot + FT", "GMP", "IMP-rewind", "movement", "DNS", "RigL", "SNIP", "GraSP", "SynFlow", "L0", "2:4 SR-STE"} <= labels
        assert len(spec.seeds) >= 3 and len(spec.sparsities) == sparsity_columns
        assert len(runs) == len(spec.seeds) * (1 + (len(labels) - 2) * sparsity_columns + 1)


def test_table_marks_cells_whose_sparsity_missed_the_target() -> None:
    from pruneaware.compare.records import RunRecord

    spec = ComparisonSpec.from_mapping({**TINY, "methods": TINY["methods"][1:4:2]})  # GMP, L0
    records = [
        RunRecord("dense", 0.0, 0.0, 0, 0.90, 1.0),
        RunRecord("GMP", 0.5, 0.5, 0, 0.88, 1.0),
        RunRecord("GMP", 0.5, 0.5, 1, 0.86, 1.0),
        RunRecord("L0", 0.8, 0.62, 0, 0.85, 1.0, "strength=0.01"),
    ]
    table = markdown_table(spec, records)
    assert "| GMP | 87.00 ± 1.41 | — |" in table
    assert "| L0 | — | 85.00 ± 0.00 (at 62.0%) |" in table
    assert "| dense | 90.00 ± 0.00 | 90.00 ± 0.00 |" in table


def test_scope_matching_no_layer_fails_before_training(tmp_path: Path) -> None:
    from pruneaware.core.errors import ScopeError

    spec = ComparisonSpec.from_mapping({**TINY, "seeds": 1, "methods": [{"label": "SR", "recipe": "sr_ste_2_4", "sparsities": [0.5]}]})
    with pytest.raises(ScopeError, match="features.0"):
        run_comparison(spec, tmp_path)
    assert not (tmp_path / "runs.csv").exists()


def test_include_takes_rows_of_a_parallel_process_instead_of_training_them(tmp_path: Path) -> None:
    mapping = {**TINY, "epochs": 1, "sparsities": [0.5], "methods": TINY["methods"][:2]}
    other = run_comparison(ComparisonSpec.from_mapping({**mapping, "seeds": [1]}), tmp_path / "seed1")
    merged = run_comparison(ComparisonSpec.from_mapping({**mapping, "seeds": [0, 1]}), tmp_path / "all", include=[tmp_path / "seed1"])
    assert [r for r in merged if r.seed == 1] == other  # same rows, wall times included: not trained again
    assert {r.seed for r in merged} == {0, 1} and len(merged) == 2 * 3
    with pytest.raises(ConfigError, match="--include"):
        run_comparison(ComparisonSpec.from_mapping({**mapping, "seeds": [0, 1], "epochs": 2}), tmp_path / "other", include=[tmp_path / "seed1"])
