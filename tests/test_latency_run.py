"""``pruneaware run RECIPE --latency-target F`` end to end: removal stops at the predicted budget, and the report
shows the target beside the predicted and measured latency of each model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pruneaware.cli.main import main
from pruneaware.data.mnist1d import cache_path, default_cache_dir, generation_args
from pruneaware.job import checkpoint


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache (latency tables are built anew) that still holds the generated MNIST-1D data."""
    data = cache_path(default_cache_dir(), generation_args())
    folder = tmp_path / "cache"
    folder.mkdir()
    if data.exists():
        (folder / data.name).symlink_to(data)
    monkeypatch.setenv("PRUNEAWARE_CACHE", str(folder))
    return folder


def _found(state: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` anywhere in a nested checkpoint state."""
    if isinstance(state, dict):
        return [value for k, value in state.items() if k == key] + [v for value in state.values() for v in _found(value, key)]
    if isinstance(state, (list, tuple)):
        return [v for value in state for v in _found(value, key)]
    return []


def test_run_with_latency_target_stops_at_the_budget_and_reports_it(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    # at batch 64: at batch 1 this 0.1 ms model's per-call overhead, which no removal shrinks, keeps it above 0.6 of dense
    args = ["run", "structured", "--epochs", "1", "--threads", "1", "--latency-target", "0.6", "--latency-batch", "64"]
    assert main([*args, "--out", str(out)]) == 0

    check = json.loads((out / "summary.json").read_text())["latency_target"]
    assert check["backend"] == "torch" and check["batch"] == 64 and check["threads"] == 1
    assert check["budget_ms"] == pytest.approx(0.6 * check["dense_predicted_ms"])
    assert check["met"] and check["predicted_ms"]["pruned"] <= check["budget_ms"]
    assert check["predicted_ms"]["pruned"] > 0.5 * check["budget_ms"]  # just enough removed, not far past the budget
    assert check["predicted_ms"]["dense"] == pytest.approx(check["dense_predicted_ms"])
    assert all(check["measured_ms"][phase] > 0 for phase in ("dense", "pruned"))

    state = checkpoint.load(out / "pruned" / "checkpoint.pt")
    assert True in _found(state["pruner"], "finished")  # the target, not the schedule's end, stopped removal
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruned"]["parameters"] < summary["dense"]["parameters"]

    report = (out / "report.md").read_text()
    assert "Latency target:" in report and "met, channel removal stopped" in report
    assert "| phase | predicted | measured (fastest) | prediction error | measured / budget |" in report
    pruned_row = next(line for line in report.splitlines() if line.startswith("| pruned | "))
    assert f"{check['predicted_ms']['pruned']:.3f} ms" in pruned_row and f"{check['measured_ms']['pruned']:.3f} ms" in pruned_row
    assert "Latency target:" in capsys.readouterr().out


def test_latency_batch_or_backend_without_a_target_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "structured", "--epochs", "1", "--latency-batch", "8", "--out", str(tmp_path / "run")]) == 2
    assert "--latency-target" in capsys.readouterr().err
