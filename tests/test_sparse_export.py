"""Sparse-kernel inference layers (to_sparse) and 2:4 conversion (to_semi_structured): outputs, decisions, errors.

Outputs of converted models must match the dense masked model within RTOL = 1e-4 and
ATOL = 1e-5 (float32; only the order of summation differs). Runs on one thread (conftest).
"""

from __future__ import annotations

import copy
import io
import pickle
import re

import pytest
import torch
from torch import nn

import pruneaware as pa
from pruneaware.core.errors import ConfigError, UsageError
from pruneaware.export import SparseConv, SparseLinear, to_semi_structured, to_sparse
from pruneaware.export.sparse_kernels import FAMILIES, Kernel, block_size, candidates
from pruneaware.granularity import NM
from pruneaware.measure import compare_latency

RTOL, ATOL = 1e-4, 1e-5
FAST = {"warmup": 1, "repeats": 2, "rounds": 1}


def zero_out(weight: torch.Tensor, sparsity: float) -> None:
    """Zero a random ``sparsity`` share of ``weight`` in place."""
    with torch.no_grad():
        weight[torch.rand_like(weight) < sparsity] = 0.0


def pruned(model: nn.Module, sparsity: float) -> nn.Module:
    """``model`` with ``sparsity`` of every Linear/conv weight removed by pruneaware (one-shot magnitude, per layer)."""
    recipe = pa.Recipe.from_dict(
        {
            "pruning": {
                "schedule": {"type": "one_shot", "sparsity": sparsity, "at": 0, "unit": "step"},
                "granularity": {"type": "element", "scope": "layer"},
            },
            "scope": {"modules": ["Linear", "Conv1d", "Conv2d"], "skip_last": False},
        }
    )
    pa.Pruner(model, None, recipe, total_steps=1).finalize()
    return model.eval()


class Block(nn.Module):
    """A transformer MLP block: LayerNorm, Linear-GELU-Linear, residual."""

    def __init__(self, width: int = 32, hidden: int = 128):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_matches_dense_linear(family):
    torch.manual_seed(0)
    layer = nn.Linear(32, 24)
    keep = (torch.rand(6, 8) > 0.7).repeat_interleave(4, 0).repeat_interleave(4, 1)  # block-sparse, so BSR fits too
    with torch.no_grad():
        layer.weight.mul_(keep)
    layout, _, call = family.partition("/")
    kernel = Kernel(layout, call, block_size(layer.weight.detach()) if layout == "bsr" else 0, 3 if layout == "csr-split" else 1)
    sparse = SparseLinear.from_dense(layer, kernel).eval()
    with torch.no_grad():
        for x in (torch.randn(32), torch.randn(1, 32), torch.randn(5, 32), torch.randn(2, 3, 32)):
            torch.testing.assert_close(sparse(x), layer(x), rtol=RTOL, atol=ATOL)
    assert list(sparse.parameters()) == []
    assert torch.equal(sparse.dense_weight(), layer.weight.detach())


@pytest.mark.parametrize(
    "conv, shape",
    [
        (nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 9, 7)),
        (nn.Conv2d(4, 6, (3, 1), dilation=(2, 1), bias=False), (1, 4, 8, 5)),
        (nn.Conv1d(4, 6, 5, padding=2, dilation=2), (2, 4, 20)),
    ],
)
def test_sparse_conv_matches_dense(conv, shape):
    torch.manual_seed(0)
    zero_out(conv.weight, 0.8)
    x = torch.randn(shape)
    for kernel in (Kernel("csr", "mm"), Kernel("csr", "addmm"), Kernel("coo", "mm")):
        with torch.no_grad():
            torch.testing.assert_close(SparseConv.from_dense(conv, kernel).eval()(x), conv(x), rtol=RTOL, atol=ATOL)


def test_candidates_depend_on_rows_and_blocks():
    weight = torch.randn(16, 16)
    zero_out(weight, 0.9)
    assert [k.name for k in candidates(weight, 1)] == ["csr/mm", "csr/addmm", "csr/mv", "coo/mm"]
    assert [k.name for k in candidates(weight, 64)] == ["csr/mm", "csr/addmm", "coo/mm"]
    blocky = torch.randn(16, 16) * (torch.rand(2, 2) > 0.5).repeat_interleave(8, 0).repeat_interleave(8, 1)
    blocky[0, 0] = 1.0
    assert [k.name for k in candidates(blocky, 64) if k.layout == "bsr"] == ["bsr8/mm", "bsr8/addmm"]
    wide = torch.randn(8, 3072)  # a 3072 x 64 float32 operand is 768 KiB: four slices of 192 KiB
    assert [k.name for k in candidates(wide, 64) if k.layout == "csr-split"] == ["csr-split4/addmm"]
    assert [k.name for k in candidates(wide, 1) if k.layout == "csr-split"] == []


@pytest.mark.parametrize("batch", [1, 16])
def test_to_sparse_matches_dense_masked_mlp(batch):
    model = pruned(mlp(), 0.9)
    x = torch.randn(batch, 64)
    report = to_sparse(model, x, min_speedup=0.0, **FAST)
    assert all(isinstance(layer, SparseLinear) for layer in list(report.model)[::2])
    assert len(report.converted) == 3
    with torch.no_grad():
        torch.testing.assert_close(report.model(x), model(x), rtol=RTOL, atol=ATOL)
    assert isinstance(model[0], nn.Linear)  # the original is left alone


def test_to_sparse_transformer_block_and_conv_net():
    torch.manual_seed(0)
    block = pruned(Block(), 0.95)
    x = torch.randn(2, 7, 32)
    report = to_sparse(block, x, min_speedup=0.0, **FAST)
    assert {d.name for d in report.converted} == {"up", "down"}
    with torch.no_grad():
        torch.testing.assert_close(report.model(x), block(x), rtol=RTOL, atol=ATOL)
    net = pruned(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2)), 0.9)
    images = torch.randn(2, 3, 12, 12)
    converted = to_sparse(net, images, min_speedup=0.0, **FAST).model
    assert isinstance(converted[0], SparseConv) and isinstance(converted[2], SparseConv)
    with torch.no_grad():
        torch.testing.assert_close(converted(images), net(images), rtol=RTOL, atol=ATOL)


def test_decisions_are_measured_and_explained():
    model = mlp()
    zero_out(model[0].weight, 0.9)
    zero_out(model[2].weight, 0.3)
    zero_out(model[4].weight, 0.9)
    x = torch.randn(4, 64)
    report = to_sparse(model, x, min_speedup=1e9, **FAST)
    lines = str(report).splitlines()
    assert re.fullmatch(r"2 \(Linear, (\d+\.\d)% zeros\): kept dense because sparsity \1% < min_sparsity 50.0%", lines[1])
    first = report.layers[0]
    assert not first.converted and "measured" in first.reason and "< min_speedup 1000000000.00x" in first.reason
    assert set(first.timings_ms) == {"dense", "csr/mm", "csr/addmm", "coo/mm"}
    assert first.speedup == pytest.approx(first.timings_ms["dense"] / min(v for k, v in first.timings_ms.items() if k != "dense"))
    assert report.converted == ()
    kept = to_sparse(model, x, min_speedup=0.0, kernels=["csr/mm"], **FAST)
    assert [d.kernel for d in kept.layers] == ["csr/mm", None, "csr/mm"]
    assert kept.layers[0].line().startswith("0 (Linear, ") and ": csr/mm, measured " in kept.layers[0].line()


def test_no_sparsity_is_a_clear_error():
    with pytest.raises(UsageError, match=r"no layer can be converted .*0 \(Linear, 0.0% zeros\): kept dense because sparsity"):
        to_sparse(mlp(), torch.randn(1, 64), **FAST)
    with pytest.raises(UsageError, match="no Linear or convolution layer"):
        to_sparse(nn.Sequential(nn.ReLU()), torch.randn(1, 4), **FAST)


def test_unsupported_and_idle_layers_are_kept_dense_with_a_reason():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose1d(2, 2, 3)
            self.grouped = nn.Conv1d(4, 4, 3, groups=2)
            self.fc = nn.Linear(16, 12)
            self.unused = nn.Linear(12, 12)

        def forward(self, x):
            return self.fc(self.grouped(torch.cat([self.up(x), self.up(x)], 1)).flatten(1))

    net = Net().eval()
    for layer in (net.up, net.grouped, net.fc, net.unused):
        zero_out(layer.weight, 0.9)
    x = torch.randn(3, 2, 4)
    lines = dict(line.split(" ", 1) for line in str(to_sparse(net, x, min_speedup=0.0, **FAST)).splitlines())
    assert "kept dense because ConvTranspose1d is not supported (Linear, Conv1d and Conv2d are)" in lines["up"]
    assert "kept dense because groups=2: only convolutions with groups=1 are converted" in lines["grouped"]
    assert ": csr/" in lines["fc"] or ": coo/" in lines["fc"]
    assert "kept dense because it did not run on the example inputs" in lines["unused"]


def test_state_dict_deepcopy_and_pickle():
    x = torch.randn(8, 64)
    saved = to_sparse(pruned(mlp(), 0.9), x, min_speedup=0.0, kernels=["csr/addmm"], **FAST).model
    other = to_sparse(pruned(mlp(), 0.6), x, min_speedup=0.0, kernels=["csr/addmm"], **FAST).model  # other nonzero counts
    state = saved.state_dict()
    assert set(state) == {f"{i}.{key}" for i in (0, 2, 4) for key in ("weight_crow_indices", "weight_col_indices", "weight_values", "bias")}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        expected = saved(x)
        assert torch.equal(other(x), expected)
        assert torch.equal(copy.deepcopy(saved)(x), expected)
        assert torch.equal(pickle.loads(pickle.dumps(saved))(x), expected)
        assert torch.allclose(saved.double()(x.double()), expected.double(), rtol=RTOL, atol=ATOL)


def test_split_csr_state_dict_takes_other_nonzero_counts():
    torch.manual_seed(0)
    kernel = Kernel("csr-split", "addmm", splits=3)
    first, second = nn.Linear(30, 8), nn.Linear(30, 8)
    zero_out(first.weight, 0.9)
    zero_out(second.weight, 0.5)
    target = SparseLinear.from_dense(second, kernel).eval()
    target.load_state_dict(SparseLinear.from_dense(first, kernel).state_dict())
    x = torch.randn(5, 30)
    with torch.no_grad():
        torch.testing.assert_close(target(x), first(x), rtol=RTOL, atol=ATOL)
    assert target.weight_crow_indices.shape == (3, 9)


def test_kernels_that_do_not_fit_are_explained():
    report = to_sparse(pruned(mlp(), 0.9), torch.randn(4, 64), min_speedup=0.0, kernels=["csr/mv"], **FAST)
    assert "kept dense because none of the kernels asked for (csr/mv) fits it at this input: mv takes one row" in str(report)


def test_sparse_layers_refuse_gradients():
    model = to_sparse(pruned(mlp(), 0.9), torch.randn(2, 64), min_speedup=0.0, **FAST).model
    x = torch.randn(2, 64)
    model(x)  # eval mode, grad enabled, no gradient wanted: fine
    with pytest.raises(UsageError, match="inference only .*its input requires grad.*model.eval\\(\\)"):
        model(x.requires_grad_())
    model.train()
    with pytest.raises(UsageError, match="training mode"):
        model(torch.randn(2, 64))
    with torch.no_grad():
        model(torch.randn(2, 64))  # train mode without gradients: fine
    assert list(model.parameters()) == []


def test_bad_arguments():
    model, x = pruned(mlp(), 0.9), torch.randn(1, 64)
    with pytest.raises(ConfigError, match="min_sparsity"):
        to_sparse(model, x, min_sparsity=1.0)
    with pytest.raises(ConfigError, match="kernels: got \\['csr/fast'\\]"):
        to_sparse(model, x, kernels=["csr/fast"])
    with pytest.raises(UsageError, match="example_inputs"):
        to_sparse(model, [])


def test_compare_latency_keeps_samples_in_round_order():
    reports = compare_latency({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)}, torch.randn(2, 4), warmup=0, repeats=6, rounds=3)
    assert all(len(report.samples_ms) == 6 for report in reports.values())
    assert sorted(reports["a"].samples_ms)[3] >= reports["a"].median_ms >= sorted(reports["a"].samples_ms)[2]


def nm_linear(in_features: int = 64, out_features: int = 64) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.mul_(NM(2, 4).masks({"weight": layer.weight.abs()}, 0.5)["weight"])
    return layer


def test_semi_structured_on_cpu_falls_back_with_a_message():
    torch.manual_seed(0)
    model = nn.Sequential(nm_linear(), nn.ReLU(), nn.Linear(64, 64), nn.Linear(6, 4), nn.Conv2d(3, 3, 3))
    with pytest.warns(UserWarning, match=r"converted nothing: 1 2:4 layer\(s\) kept dense \(0\): 2:4 semi-structured kernels run only on CUDA"):
        report = to_semi_structured(model)
    lines = str(report).splitlines()
    assert lines[0] == (
        "0 (Linear, 50.0% zeros): kept dense because its weight is on cpu: 2:4 semi-structured kernels run only "
        "on CUDA GPUs of compute capability 8.0 or newer; the dense masked layer is kept"
    )
    assert "kept dense because its mask is not 2:4: 1024 of 1024 groups of 4 input weights hold more than 2 nonzeros (first: row 0, inputs 0-3)" in lines[1]
    assert "kept dense because in_features 6 is not a multiple of 4" in lines[2]
    assert "kept dense because Conv2d is not supported (2:4 conversion takes Linear layers)" in lines[3]
    assert report.converted == ()
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(report.model[:3](x), model[:3](x))


def test_semi_structured_checks_every_group():
    layer = nm_linear()
    with torch.no_grad():
        layer.weight[5, 8:12] = 1.0  # one group of four with four nonzeros
    with pytest.raises(UsageError, match=r"no Linear layer has a 2:4 mask.*1 of 1024 groups .*row 5, inputs 8-11"):
        to_semi_structured(nn.Sequential(layer))


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0), reason="needs an NVIDIA GPU, sm_80+"
)
def test_semi_structured_on_gpu_matches_dense():
    torch.manual_seed(0)
    model = nn.Sequential(nm_linear(128, 128), nn.ReLU(), nm_linear(128, 128)).half().cuda().eval()
    report = to_semi_structured(model)
    assert len(report.converted) == 2
    x = torch.randn(64, 128, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        torch.testing.assert_close(report.model(x), model(x), rtol=1e-2, atol=1e-2)
