"""Latency tables: built over widths, cached by key, refused from elsewhere, and predictions that follow the widths."""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch
from torch import nn

from pruneaware.core.errors import ConfigError
from pruneaware.hardware import LatencyTable, build_table, latency_table, predict_latency
from pruneaware.hardware.backends import backend
from pruneaware.hardware.build import sample_widths
from pruneaware.hardware.keys import TableKey
from pruneaware.hardware.layers import capture_contexts
from pruneaware.hardware.predict import predict_widths, widths_of
from pruneaware.hardware.probe import fixed_rest_ms, uniform_probe
from pruneaware.hardware.table import Sweep


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEAWARE_CACHE", str(tmp_path))
    return tmp_path


def test_sample_widths_are_multiples_and_end_at_full():
    widths = sample_widths(64, 8, 4)
    assert widths[-1] == 64 and len(widths) == 4
    assert all(w % 8 == 0 for w in widths)
    assert sample_widths(5, 8, 4) == [1, 2, 4, 5]  # narrower than two steps: any width, evenly spread


def test_table_times_each_layer_and_prediction_falls_with_width(cache):
    model, x = small_cnn(), torch.randn(2, 3, 16, 16)
    table = build_table(model, x, batch=1, points=3, repeats=3, threads=1, progress=False)
    assert set(table.contexts) == {"0", "2", "6"}
    assert table.key.batch == 1 and table.key.threads == 1 and table.key.backend == "torch"
    dense = predict_latency(model, table)
    assert dense == pytest.approx(table.dense_ms)  # at full widths the prediction is the measured latency
    slim = copy.deepcopy(model)
    slim[0], slim[2] = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
    slim[6] = nn.Linear(16, 10)
    assert predict_latency(slim, table) < dense


def test_table_is_cached_and_reused(cache):
    model, x = small_cnn(), torch.randn(1, 3, 16, 16)
    first = latency_table(model, x, batch=1, threads=1, progress=False)
    files = list((cache / "latency").rglob("*.json"))
    assert len(files) == 1
    second = latency_table(model, x, batch=1, threads=1, progress=False)
    assert second.dense_ms == first.dense_ms  # loaded, not re-measured
    with pytest.raises(ConfigError, match="build_table"):
        latency_table(model, x, batch=4, threads=1, build=False)


def test_table_from_another_device_is_refused_naming_the_keys(cache, tmp_path):
    model, x = small_cnn(), torch.randn(1, 3, 16, 16)
    table = build_table(model, x, batch=1, points=2, repeats=2, threads=1, progress=False)
    path = tmp_path / "table.json"
    table.save(path)
    data = json.loads(path.read_text())
    data["key"]["device"] = "Some Other CPU"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="device: table 'Some Other CPU'"):
        latency_table(model, x, batch=1, threads=1, path=path)
    table.save(path)
    with pytest.raises(ConfigError, match="batch 4"):  # a table for another batch: build one (the command is named)
        latency_table(model, x, batch=4, threads=1, path=path)
    assert LatencyTable.load(path).dense_ms == table.dense_ms


def test_others_load_sees_another_busy_process():
    import subprocess
    import sys
    import time

    from pruneaware.hardware.contention import BUSY_SHARE, OthersLoad

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the interpreter has started and spins
        with OthersLoad() as others:
            time.sleep(1.5)  # this process idles: what the counters see busy is the other one
    finally:
        spinner.kill()
    assert others.share is not None and others.share > BUSY_SHARE  # one spinning core of the machine's


def test_table_measured_under_load_warns_and_rebuild_remeasures(cache, tmp_path, caplog):
    model, x = small_cnn(), torch.randn(1, 3, 16, 16)
    table = latency_table(model, x, batch=1, threads=1, progress=False)
    assert table.others_load is None or 0 <= table.others_load <= 1
    path = next((cache / "latency").rglob("*.json"))
    data = json.loads(path.read_text())
    data["others_load"], data["dense_ms"] = 0.6, 1e6
    path.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="pruneaware.hardware.build"):
        loaded = latency_table(model, x, batch=1, threads=1, progress=False)
    assert loaded.dense_ms == 1e6 and "60% of the CPU" in caplog.text and "rebuild=True" in caplog.text
    rebuilt = latency_table(model, x, batch=1, threads=1, progress=False, rebuild=True)
    assert rebuilt.dense_ms < 1e6 and json.loads(path.read_text())["dense_ms"] == rebuilt.dense_ms  # re-measured, cache replaced


def test_a_table_whose_dense_time_moved_during_the_build_warns_at_build_and_load(cache, monkeypatch, caplog):
    import dataclasses

    from pruneaware.hardware import build as build_module
    from pruneaware.hardware.contention import DRIFT, drift_warning, speed_drift

    real = backend("torch")
    dense_calls: list[float] = []

    def drifting(module, inputs, repeats, before=None):  # the whole model runs 1.5x slower at the end of the build
        if isinstance(module, nn.Sequential):
            dense_calls.append(1.0 if not dense_calls else 1.5)
            return dense_calls[-1]
        return 0.1

    monkeypatch.setattr(build_module, "get_backend", lambda name: dataclasses.replace(real, time_ms=drifting))
    model, x = small_cnn(), torch.randn(1, 3, 16, 16)
    with caplog.at_level("WARNING", logger="pruneaware.hardware.build"):
        table = latency_table(model, x, batch=1, threads=1, progress=False)
    assert dense_calls[:2] == [1.0, 1.5] and table.dense_ms == 1.0 and table.speed_drift == pytest.approx(0.5)  # then the slim probe
    assert "50% apart" in caplog.text and "rebuild=True" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pruneaware.hardware.build"):
        loaded = latency_table(model, x, batch=1, threads=1, progress=False)  # from the cache: still flagged
    assert loaded.speed_drift == pytest.approx(0.5) and "50% apart" in caplog.text
    assert speed_drift(100.0, 100.0 * (1 + DRIFT / 2)) < DRIFT and drift_warning(DRIFT / 2, "here") is None


class PerCallOverhead(nn.Module):
    """Costs the same time at every width, as per-call dispatch does: what a rest scaled by the outputs left misses."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def test_the_slim_probe_finds_a_cost_that_stays_at_every_width(cache):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), PerCallOverhead(0.005), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    x = torch.randn(1, 3, 8, 8)
    table = build_table(model, x, batch=1, points=3, repeats=3, threads=1, progress=False)
    assert 3.0 < table.rest_fixed_ms < 7.0  # the 5 ms sleep, not a share that shrinks with the channels
    table.save(cache / "table.json")
    assert LatencyTable.load(cache / "table.json").rest_fixed_ms == table.rest_fixed_ms
    probe = uniform_probe(model, x, round_to=8)
    assert probe is not None and probe[0].out_channels < 32 and probe[7].out_features == 10  # the classifier's outputs kept
    assert predict_latency(probe, table) > 0.8 * table.dense_ms  # the sleep dominates: slimming saves little


def test_fixed_rest_is_the_one_value_that_predicts_dense_and_probe_and_stays_in_range():
    model, x = small_cnn(), torch.randn(1, 3, 16, 16)
    contexts, per_channel = capture_contexts(model, x)
    sweeps = {}
    for name, context in contexts.items():  # synthetic layer times, proportional to in x out
        cost = lambda i, o: 1e-4 * i * o  # noqa: E731
        widths = lambda full: sorted({*range(8, full, 8), full})  # noqa: E731
        sweeps[context.signature()] = Sweep(cost(context.in_full, context.out_full), [(w, cost(context.in_full, w)) for w in widths(context.out_full)],
                                            [(w, cost(w, context.out_full)) for w in widths(context.in_full)])
    table = LatencyTable(TableKey("cpu", "torch", "-", 1, "float32", 1), contexts, sweeps, 0.0, per_channel)
    fixed, per_output = 2.0, 1e-4
    table.dense_ms = table.dense_layers_ms() + fixed + per_output * table.outputs()
    probe = uniform_probe(model, x, round_to=8)
    widths = widths_of(probe, table)
    probe_ms = sum(table.layer_ms(n, i, o) for n, (i, o) in widths.items()) + fixed + per_output * table.outputs(widths)
    assert fixed_rest_ms(table, probe, probe_ms) == pytest.approx(fixed)
    proportional = predict_widths(table, widths)
    table.rest_fixed_ms = fixed_rest_ms(table, probe, probe_ms)
    assert predict_widths(table, widths) == pytest.approx(probe_ms) and proportional < probe_ms  # without it: too fast
    assert predict_latency(model, table) == pytest.approx(table.dense_ms)  # dense still predicted as measured
    dense_rest = table.dense_ms - table.dense_layers_ms()
    assert fixed_rest_ms(table, probe, 10 * probe_ms) == pytest.approx(dense_rest)  # never more than the whole rest
    assert fixed_rest_ms(table, probe, 0.0) == 0.0  # nor below zero


def test_unknown_and_missing_backends_are_refused():
    with pytest.raises(ConfigError, match="onnxruntime"):
        backend("tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA GPU"):
            backend("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_table(cache):
    model, x = small_cnn(), torch.randn(1, 3, 16, 16)
    table = build_table(model, x, backend="cuda", batch=1, points=2, repeats=3, progress=False)
    assert table.key.backend == "cuda" and table.dense_ms > 0


def test_onnxruntime_table(cache):
    pytest.importorskip("onnxruntime")
    model, x = small_cnn(), torch.randn(1, 3, 16, 16)
    table = build_table(model, x, backend="onnxruntime", batch=1, points=2, repeats=2, threads=1, progress=False)
    assert "onnxruntime" in table.key.versions and predict_latency(model, table) == pytest.approx(table.dense_ms)


@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_compare_latency_on_a_backend_times_every_model_and_ranks_a_slimmer_one_faster(name):
    if name == "onnxruntime":
        pytest.importorskip("onnxruntime")
    from pruneaware.measure import compare_latency

    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 512)).eval()
    narrow = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 512)).eval()
    reports = compare_latency({"wide": wide, "narrow": narrow}, torch.randn(32, 512), repeats=9, rounds=9, backend=name)
    assert {len(report.samples_ms) for report in reports.values()} == {9}
    assert reports["narrow"].median_ms < reports["wide"].median_ms  # 32x fewer MACs: no load on a CI machine hides that
    assert wide.training is False and next(wide.parameters()).device.type == "cpu"


def test_onnxruntime_tables_say_worker_threads_do_not_spin():
    pytest.importorskip("onnxruntime")
    assert "no spinning" in backend("onnxruntime").versions()  # a table timed with spinning workers is not reused
