"""The main job end to end: outputs, counted sparsity, and exact resume after a crash or a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pruneaware.job.run import prepare_run_directory, run_job
from pruneaware.job.spec import RunSpec


class Crash(Exception):
    pass


def crash_at(step: int):
    def callback(current: int) -> None:
        if current == step:
            raise Crash(f"simulated crash at step {step}")

    return callback


def test_job_writes_report_metrics_plots_and_checkpoint(tiny_run_file: Path, tmp_path: Path) -> None:
    spec = RunSpec.from_yaml(tiny_run_file)
    out = tmp_path / "run"
    prepare_run_directory(spec, out)
    result = run_job(spec, out, latency_batches=(1,))
    for name in ("spec.yaml", "dense_model.pt", "pruned_model.pt", "pruned/checkpoint.pt"):
        assert (out / name).is_file(), name
    pruned = result.phases["pruned"]
    weights = torch.load(out / "pruned_model.pt")
    counted = [weights[name] for name in (layer.name for layer in pruned.summary.layers)]
    zeros = sum(int((w == 0).sum()) for w in counted) / sum(w.numel() for w in counted)
    assert pruned.summary.sparsity == pytest.approx(zeros)
    assert zeros == pytest.approx(0.8, abs=1e-3)
    assert result.phases["dense"].summary.sparsity == 0.0
    assert pruned.macs.effective < 0.5 * pruned.macs.dense
    assert pruned.size.compressed < result.phases["dense"].size.compressed


STRUCTURED = {"structured": {"schedule": {"type": "linear", "final": 0.5, "begin": 10, "end": 70, "every": 20, "unit": "step"}}}


@pytest.mark.parametrize("structured", [False, True], ids=["element", "channels"])
def test_crash_mid_epoch_then_resume_gives_identical_weights(tiny_run_file: Path, tmp_path: Path, structured: bool) -> None:
    spec = RunSpec.from_yaml(tiny_run_file).with_overrides(dense_baseline=False)
    if structured:  # channels removed before the crash are replayed on resume, one more removal after it
        mapping = {key: value for key, value in spec.to_mapping().items() if key != "pruning"}
        spec = RunSpec.from_mapping({**mapping, **STRUCTURED})
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    for folder in (straight, interrupted):
        prepare_run_directory(spec, folder)
    run_job(spec, straight, latency_batches=())
    with pytest.raises(Crash):
        run_job(spec, interrupted, callbacks=[crash_at(50)], latency_batches=())  # epoch 3 of 4, mid-epoch
    assert (interrupted / "pruned" / "checkpoint.pt").is_file()
    run_job(spec, interrupted, latency_batches=())
    expected, actual = torch.load(straight / "pruned_model.pt"), torch.load(interrupted / "pruned_model.pt")
    assert expected.keys() == actual.keys()
    if structured:
        assert expected["1.weight"].shape[0] < 256, "no channels were removed"
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_sigkill_then_resume_from_cli_gives_identical_weights(tiny_run_file: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pruneaware.cli.main", "run", str(tiny_run_file), "--no-dense", "--epochs", "30"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([*command, "--out", str(straight)], check=True, env=env, capture_output=True)
    process = subprocess.Popen([*command, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "pruned" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let it get into a later epoch, mid-write or mid-step
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "report.md").exists(), "the run finished before it was killed; kill earlier"
    resumed = subprocess.run([sys.executable, "-m", "pruneaware.cli.main", "run", "--resume", str(killed)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    expected, actual = torch.load(straight / "pruned_model.pt"), torch.load(killed / "pruned_model.pt")
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_metrics_csv_and_summary_json(tiny_run_file: Path, tmp_path: Path) -> None:
    from pruneaware.job.run import write_metrics

    spec = RunSpec.from_yaml(tiny_run_file)
    out = tmp_path / "run"
    prepare_run_directory(spec, out)
    write_metrics(run_job(spec, out, latency_batches=(1, 8)))
    with open(out / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["phase"] for row in rows] == ["dense"] * 4 + ["pruned"] * 4
    assert float(rows[-1]["sparsity"]) == pytest.approx(0.8, abs=1e-3)
    headline = json.loads((out / "summary.json").read_text())
    assert headline["pruned"]["nonzero_parameters"] < headline["dense"]["nonzero_parameters"]
    assert set(headline["pruned"]["latency_ms"]) == {"1", "8"}
