"""Measurements: parameter counts, FLOP-counter MACs, stored size and latency."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneaware.core.errors import ConfigError
from pruneaware.measure import (
    MacCount,
    count_macs,
    count_nonzero_parameters,
    count_parameters,
    measure_latency,
    state_dict_size_bytes,
)
from pruneaware.models import build_model


def test_parameter_counts():
    layer = nn.Linear(10, 20)
    assert count_parameters(layer) == 220
    assert count_nonzero_parameters(layer) == 220
    with torch.no_grad():
        layer.weight[:5].zero_()
        layer.bias.zero_()
    assert count_parameters(layer) == 220
    assert count_nonzero_parameters(layer) == 220 - 50 - 20


def test_linear_macs_and_effective_macs():
    layer = nn.Linear(10, 20)
    assert count_macs(layer, torch.randn(1, 10)) == MacCount(dense=200, effective=200)
    with torch.no_grad():
        layer.weight[:, :5].zero_()
    macs = count_macs(layer, torch.randn(1, 10))
    assert macs.dense == 200
    assert macs.effective == 100
    assert count_macs(layer, torch.randn(3, 10)).dense == 600


def test_conv1d_macs_match_formula():
    conv = nn.Conv1d(3, 8, kernel_size=5, stride=2, padding=2)
    length_in, batch = 40, 2
    length_out = (length_in + 2 * 2 - 5) // 2 + 1
    macs = count_macs(conv, torch.randn(batch, 3, length_in))
    assert macs.dense == batch * 8 * length_out * 3 * 5
    assert macs.effective == macs.dense


def test_effective_macs_only_scale_weighted_layers():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 4))
    with torch.no_grad():
        model[2].weight.zero_()
    macs = count_macs(model, torch.randn(1, 10))
    assert macs.dense == 200 + 80
    assert macs.effective == 200


def test_count_macs_restores_training_modes():
    model = build_model("resnet20", (3, 8, 8), 10)
    model.train()
    model.stages[0].eval()
    macs = count_macs(model, torch.randn(1, 3, 8, 8))
    assert macs.dense > 0 and macs.effective == macs.dense
    assert model.training and model.fc.training
    assert not model.stages[0].training and not model.stages[0][0].conv1.training


def test_compressed_size_is_smaller_for_sparse_model():
    torch.manual_seed(0)
    dense = nn.Linear(200, 200)
    sparse = nn.Linear(200, 200)
    with torch.no_grad():
        mask = torch.rand_like(sparse.weight) < 0.9
        sparse.weight[mask] = 0.0
    dense_size = state_dict_size_bytes(dense)
    sparse_size = state_dict_size_bytes(sparse)
    assert sparse_size.raw == dense_size.raw
    assert dense_size.compressed < dense_size.raw
    assert sparse_size.compressed < 0.5 * dense_size.compressed


def test_latency_report_fields():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).train()
    threads = torch.get_num_threads()
    report = measure_latency(model, torch.randn(8, 16), warmup=1, repeats=5, threads=1)
    assert report.repeats == 5 and report.batch_size == 8
    assert 0 < report.p10_ms <= report.median_ms <= report.p90_ms
    assert torch.get_num_threads() == threads
    assert model.training


def test_latency_rejects_bad_arguments():
    model = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="repeats"):
        measure_latency(model, torch.randn(1, 2), repeats=0)
    with pytest.raises(ConfigError, match="threads"):
        measure_latency(model, torch.randn(1, 2), threads=0)
