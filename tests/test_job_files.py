"""Run folders under faults and odd input: stale temporaries, file modes, recipe names as paths, damaged files, re-rendered reports."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

from pruneaware.cli.main import main
from pruneaware.cli.run_command import folder_name
from pruneaware.job import checkpoint
from tests.byo_helpers import write_factory, write_recipe


@pytest.fixture
def factory_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    module = write_factory(tmp_path, "user_code_files")
    return write_recipe(tmp_path, model=f"{module}:make_model", dataset=f"{module}:make_data", log_every=4)


def test_stale_checkpoint_temporaries_are_removed_on_resume(factory_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", str(factory_recipe), "--out", str(out)]) == 0
    stale = [out / "pruned" / ".checkpoint.pt.abc123.tmp", out / ".dense_model.pt.0f0f0f.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = out / "pruned" / "notes.tmp"
    keep.write_text("not ours")
    assert main(["run", "--resume", str(out)]) == 0
    assert not any(path.exists() for path in stale) and keep.exists()


def test_checkpoints_and_models_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        checkpoint.atomic_save({"x": torch.zeros(1)}, tmp_path / "a.pt")
        os.umask(0o077)
        checkpoint.atomic_save({"x": torch.zeros(1)}, tmp_path / "b.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../x", "x"), ("gmp-90", "gmp-90"), ("a/b c", "a-b-c"), ("...", "run"), ("é" * 5, "run"), ("n" * 300, "n" * 80)],
)
def test_recipe_names_become_safe_folder_names(name: str, expected: str) -> None:
    assert folder_name(name) == expected


def test_a_hostile_recipe_name_stays_inside_runs(factory_recipe: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load(factory_recipe.read_text())
    spec["name"] = "../../escaped" + "x" * 300
    factory_recipe.write_text(yaml.safe_dump(spec))
    assert main(["run", str(factory_recipe), "--epochs", "1", "--no-dense"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("escaped") and len(folder.name) < 100
    assert not (tmp_path.parent / "escaped").exists() and not list(tmp_path.parent.glob("escaped*"))


def test_binary_spec_and_checkpoint_with_missing_keys_are_state_errors(factory_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["run", str(factory_recipe), "--out", str(out), "--no-dense"]) == 0
    spec = (out / "spec.yaml").read_bytes()
    (out / "spec.yaml").write_bytes(b"\x80\x81\xfe\x00" * 8)
    capsys.readouterr()
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "spec.yaml" in err and "binary" in err and "Traceback" not in err
    (out / "spec.yaml").write_bytes(spec)
    state = torch.load(out / "pruned" / "checkpoint.pt", weights_only=True)
    del state["optimizer"], state["rng"]
    torch.save(state, out / "pruned" / "checkpoint.pt")
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "'optimizer'" in err and "delete it" in err and "Traceback" not in err


def test_report_rerenders_an_interrupted_run(factory_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pruneaware.job.run import prepare_run_directory, run_job
    from pruneaware.job.spec import RunSpec

    spec = RunSpec.from_yaml(factory_recipe).with_overrides(epochs=3)
    out = tmp_path / "run"
    prepare_run_directory(spec, out)

    calls = []

    def stop(step: int) -> None:
        calls.append(step)
        if len(calls) == 24 + 10:  # after the dense phase's 24 steps, in the pruned phase's second epoch (8 steps per epoch)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(spec, out, callbacks=[stop], latency_batches=(1,))
    assert not (out / "report.md").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Interrupted run" in report and "dense 3" in report and "pruned 1" in report
    assert (out / "plots" / "curves.png").is_file() and (out / "summary.json").is_file()
    assert main(["run", "--resume", str(out)]) == 0
    with open(out / "pruned" / "steps.csv") as stream:  # the steps after the checkpoint were logged once, not twice
        assert [int(row["step"]) for row in csv.DictReader(stream)] == list(range(4, 25, 4))
    assert main(["report", str(out)]) == 0
    assert "Interrupted run" not in (out / "report.md").read_text()
