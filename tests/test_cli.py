"""The command line: the main job's outputs, and one-line errors with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pruneaware.cli.main import main


def test_run_writes_report_and_plots(tiny_run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", str(tiny_run_file), "--out", str(out), "--epochs", "2"]) == 0
    report = (out / "report.md").read_text()
    assert "| test accuracy |" in report and "| pruned / dense |" not in report.splitlines()[0]
    assert {p.name for p in (out / "plots").iterdir()} == {"schedule.png", "curves.png", "layer_sparsity.png"}
    assert "test accuracy" in capsys.readouterr().out


def _bad_recipe(tmp_path: Path, **changes: object) -> Path:
    from tests.conftest import TINY_RUN

    spec = yaml.safe_load(yaml.safe_dump(TINY_RUN))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = spec
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pruning__criterion": "magnitud"}, "criterion"),
        ({"pruning__schedule__final": 1.0}, "final"),
        ({"pruning__schedule__type": "sawtooth"}, "sawtooth"),
        ({"pruning__granularity": "4:4"}, "N < M"),
        ({"scope": {"include": ["no_such_layer*"]}}, "no_such_layer"),
        ({"pruning__schedule__end": 10_000}, "ends by the last training step"),
        ({"train__model": "resnet1000"}, "resnet1000"),
        ({"train__epochs": 0}, "train.epochs"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict, expected: str) -> None:
    code = main(["run", str(_bad_recipe(tmp_path, **changes)), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error:") and "Traceback" not in err
    assert expected in err
    assert len(err.strip().splitlines()) == 1 or err.count("error:") == 1


def test_missing_recipe_file_and_bad_resume_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_unknown_shipped_recipe_lists_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no-such-recipe"]) == 2
    assert "default" in capsys.readouterr().err
