"""Quantization-aware training composed with pruning: zeros stay zero through QAT and int8 conversion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.data import load_dataset
from pruneaware.core.errors import ConfigError, StateError
from pruneaware.core.legacy import with_stage_state
from pruneaware.job.run import check_run, prepare_run_directory, run_job
from pruneaware.job.spec import RunSpec
from pruneaware.recipe.shipped import default_recipe_path
from pruneaware.job.trainer import evaluate
from pruneaware.measure import state_dict_size_bytes
from pruneaware.models import build_model
from pruneaware.report.markdown import render_markdown
from pruneaware.report.table import comparison_rows
from tests.conftest import TINY_RUN
from tests.test_job import Crash, crash_at

pytest.importorskip("torchao", reason="quantization needs torchao: pip install torchao==0.18.0")
from pruneaware.quantization import QuantizedWeight, check_zeros_kept, convert_int8, int8_as_float, prepare_qat  # noqa: E402

GMP = {"pruning": {"schedule": {"type": "cubic", "final": 0.8, "begin": 0, "end": 40, "every": 10, "unit": "step"}}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def train(forward: torch.nn.Module, optimizer: torch.optim.Optimizer, data, epochs: int, seed: int) -> None:
    inputs, targets = data.train.tensors
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(targets), generator=generator).split(64):
            loss = F.cross_entropy(forward(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@pytest.fixture(scope="module")
def masked_qat(digits):
    """An MLP pruned to 80% by GMP on digits, then 2 epochs of QAT with the pruner still attached, then int8."""
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes, hidden=(128, 64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    pruner = pa.Pruner(model, optimizer, GMP, total_steps=6 * 23)
    train(model, optimizer, digits, epochs=3, seed=0)
    masks = {name: mask.clone() for name, mask in pruner.masks.masks.items()}
    prepared = prepare_qat(model, digits.train.tensors[0][:64])
    train(prepared, optimizer, digits, epochs=2, seed=1)
    pruner.finalize()
    return model, pruner, masks, prepared, convert_int8(prepared, digits.train.tensors[0][:64])


def test_qat_module_trains_the_models_own_parameters(masked_qat) -> None:
    model, pruner, masks, prepared, _ = masked_qat
    for name in masks:
        assert prepared.get_parameter(name) is model.get_parameter(name) is pruner.params[name], name
    assert pruner.masks.masks.keys() == masks.keys()
    for name, keep in masks.items():
        assert torch.equal(pruner.masks[name], keep), f"masks changed during QAT: {name}"


def test_zeros_stay_zero_through_qat(masked_qat) -> None:
    model, _, masks, prepared, _ = masked_qat
    weight_quantizers = {
        node.args[0].target: prepared.get_submodule(node.target)
        for node in prepared.graph.nodes
        if node.op == "call_module" and node.args and getattr(node.args[0], "op", None) == "get_attr"
    }
    assert set(masks) <= set(weight_quantizers), "every masked weight goes through a fake quantizer"
    for name, keep in masks.items():
        weight = model.get_parameter(name)
        assert (~keep).sum() > 0.7 * keep.numel()
        assert torch.count_nonzero(weight[~keep]) == 0, name
        with torch.no_grad():
            fake_quantized = weight_quantizers[name](weight)  # what the forward pass computes with
        assert torch.count_nonzero(fake_quantized[~keep]) == 0, name


def test_int8_weights_are_zero_where_masked_and_run_int8_kernels(masked_qat, digits) -> None:
    model, _, masks, _, int8 = masked_qat
    assert set(int8.weights) == {"1.weight", "3.weight", "5.weight"}
    for name, keep in masks.items():
        weight = int8.weights[name]
        assert weight.values.dtype == torch.int8
        assert torch.count_nonzero(weight.dequantize()[~keep]) == 0, name
        assert torch.count_nonzero(weight.values[~keep]) == 0, name
    check_zeros_kept(int8, masks)
    assert int8.int8_kernel_calls == len(int8.weights), "every quantized layer runs on a oneDNN int8 kernel"
    fp32_accuracy = evaluate(model, digits.test)[1]
    int8_accuracy = evaluate(int8.module, digits.test)[1]
    assert int8_accuracy > 0.9
    assert abs(int8_accuracy - fp32_accuracy) < 0.03
    assert int8.size.raw < 0.4 * state_dict_size_bytes(model).raw  # int8 weights plus scales, zero points, fp32 biases


def test_zero_check_catches_a_masked_weight_that_came_back(masked_qat) -> None:
    _, _, masks, _, int8 = masked_qat
    weight = int8.weights["1.weight"]
    values = weight.values.clone()
    values[~masks["1.weight"]] = 3
    leaked = dataclasses.replace(int8, weights={**int8.weights, "1.weight": dataclasses.replace(weight, values=values)})
    with pytest.raises(StateError, match="1.weight"):
        check_zeros_kept(leaked, masks)


def test_counting_copy_holds_the_dequantized_int8_weights(masked_qat) -> None:
    model, _, masks, _, int8 = masked_qat
    counted = int8_as_float(model, int8)
    for name in int8.weights:
        assert torch.equal(counted.get_parameter(name), int8.weights[name].dequantize())
    assert all(torch.count_nonzero(counted.get_parameter(name)[~keep]) == 0 for name, keep in masks.items())


def test_quantized_weight_dequantizes_per_channel() -> None:
    weight = QuantizedWeight(torch.tensor([[2, -4], [0, 10]], dtype=torch.int8), torch.tensor([0.5, 0.1]), torch.tensor([0, 0]), axis=0)
    assert torch.allclose(weight.dequantize(), torch.tensor([[1.0, -2.0], [0.0, 1.0]]))


def test_slimmed_model_through_qat(digits) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", digits.input_shape, digits.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs = digits.train.tensors[0]
    recipe = {"structured": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 2, "unit": "step"}}}
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=3 * 23, example_inputs=inputs[:8])
    train(model, optimizer, digits, epochs=2, seed=0)
    slim_shapes = {name: tuple(param.shape) for name, param in model.named_parameters()}
    assert slim_shapes["features.0.weight"][0] < 6, "no channels were removed"
    prepared = prepare_qat(model, inputs[:64])
    assert {name: tuple(param.shape) for name, param in prepared.named_parameters()} == slim_shapes
    train(prepared, optimizer, digits, epochs=1, seed=1)
    pruner.finalize()
    int8 = convert_int8(prepared, inputs[:64])
    assert set(int8.weights) == {name for name in slim_shapes if name.endswith("weight")}
    for name, weight in int8.weights.items():
        assert tuple(weight.values.shape) == slim_shapes[name], name
    assert int8.int8_kernel_calls == len(int8.weights)
    assert int8.module(inputs[:5]).shape == (5, digits.num_classes)
    int8_accuracy = evaluate(int8.module, digits.test)[1]
    assert abs(int8_accuracy - evaluate(int8.reference, digits.test)[1]) < 0.02, "int8 kernels compute what the converted graph describes"
    assert abs(int8_accuracy - evaluate(model, digits.test)[1]) < 0.05


class ConvNormNet(torch.nn.Module):
    """Two convolutions with batch norm (folded into the int8 convolutions), dropout, and a classifier."""

    def __init__(self):
        super().__init__()
        self.conv1, self.norm1, self.relu = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        self.conv2, self.norm2 = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16)
        self.dropout, self.fc = torch.nn.Dropout(0.1), torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm1(self.conv1(x)))
        x = torch.relu(self.norm2(self.conv2(x)))
        return self.fc(self.dropout(x.mean((2, 3))))


@pytest.mark.slow  # torchao's batch-norm folding re-captures many patterns: about 40 s of CPU
def test_batch_norm_folded_into_int8_convolutions_keeps_the_zeros(digits) -> None:
    torch.manual_seed(0)
    model = ConvNormNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    recipe = {"pruning": {"schedule": {"type": "one_shot", "sparsity": 0.7, "at": 0, "unit": "step"}}}
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=100)
    prepared = prepare_qat(model, digits.train.tensors[0][:64])
    tracked = int(model.norm1.num_batches_tracked)
    train(prepared, optimizer, digits, epochs=1, seed=0)
    assert int(model.norm1.num_batches_tracked) == tracked + 23, "QAT updates the model's own norm statistics"
    pruner.finalize()
    int8 = convert_int8(prepared, digits.train.tensors[0][:64])
    assert {"conv1.weight", "conv2.weight"} <= set(int8.weights)
    check_zeros_kept(int8, pruner.masks.masks)
    for name in ("conv1.weight", "conv2.weight"):  # weights scaled by the folded norm: zeros stay zeros
        assert torch.count_nonzero(int8.weights[name].dequantize()[~pruner.masks[name]]) == 0
    assert int8.module(digits.test.tensors[0][:3]).shape == (3, 10)


def test_prepare_refuses_a_batch_of_one() -> None:
    with pytest.raises(ConfigError, match="example_inputs"):
        prepare_qat(build_model("mlp", (4,), 3), torch.randn(1, 4))


# -- the qat stage in a Pruner ---------------------------------------------------------------------

QAT_RECIPE = {**GMP, "quantization": {"qat": {"epochs": 1}}}  # digits: 23 steps per epoch, masks settle at step 40


def qat_pruner(digits, recipe: dict, **pruner_options: object) -> tuple[torch.nn.Module, torch.optim.Optimizer, pa.Pruner]:
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes, hidden=(64,))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    options = {"steps_per_epoch": 23, "epochs": 3, "example_inputs": digits.train.tensors[0][:64], **pruner_options}
    return model, optimizer, pa.Pruner(model, optimizer, recipe, **options)


@pytest.mark.parametrize("order", [None, ["prune", "qat"], ["qat", "prune"]])
def test_qat_stage_trains_the_last_epoch_through_the_capture_and_converts(digits, order) -> None:
    recipe = {**QAT_RECIPE, "stages": order} if order else QAT_RECIPE
    model, optimizer, pruner = qat_pruner(digits, recipe)
    qat = pruner.stage("qat")
    assert [stage.name for stage in pruner.stages] == (order or ["prune", "qat"])
    train(lambda x: pruner.training_module(x), optimizer, digits, epochs=1, seed=0)
    assert pruner.training_module is model and not qat.active
    train(lambda x: pruner.training_module(x), optimizer, digits, epochs=1, seed=1)
    assert qat.active and pruner.training_module is qat.module, "QAT begins with the last epoch (step 46)"
    masks = {name: mask.clone() for name, mask in pruner.masks.masks.items()}
    train(lambda x: pruner.training_module(x), optimizer, digits, epochs=1, seed=2)
    assert all(qat.module.get_parameter(name) is param for name, param in pruner.params.items())
    assert all(torch.equal(pruner.masks[name], keep) for name, keep in masks.items()), "masks changed during QAT"
    pruner.finalize()
    int8 = qat.convert()  # checks the zeros
    assert all(torch.count_nonzero(int8.weights[name].values[~keep]) == 0 for name, keep in masks.items())
    assert evaluate(int8.module, digits.test)[1] > 0.85


def test_a_step_that_bypasses_the_capture_is_refused(digits) -> None:
    model, optimizer, pruner = qat_pruner(digits, {**GMP, "quantization": {"qat": {"epochs": 3}}, "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}}})
    inputs, targets = digits.train.tensors[0][:64], digits.train.tensors[1][:64]
    assert pruner.stage("qat").active, "QAT over every epoch begins when the Pruner is built"
    F.cross_entropy(pruner.training_module(inputs), targets).backward()
    optimizer.step()
    optimizer.zero_grad()
    F.cross_entropy(model(inputs), targets).backward()
    with pytest.raises(pa.UsageError, match="pruner.training_module"):
        optimizer.step()


@pytest.mark.parametrize(
    ("options", "field", "hint"),
    [({"steps_per_epoch": None, "total_steps": 69}, "quantization.qat.epochs", "steps_per_epoch"), ({"example_inputs": None}, "quantization.qat", "example_inputs")],
)
def test_qat_stage_needs_the_runs_epochs_and_example_inputs(digits, options: dict, field: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint) as caught:
        qat_pruner(digits, QAT_RECIPE, **options)
    assert caught.value.field == field


def test_qat_state_travels_in_the_pruner_state_and_earlier_job_checkpoints_still_load(digits) -> None:
    _, optimizer, pruner = qat_pruner(digits, QAT_RECIPE)
    assert pruner.state_dict()["stages"]["qat"] == {"start": 46}
    train(lambda x: pruner.training_module(x), optimizer, digits, epochs=3, seed=0)
    state = pruner.state_dict()
    quantizers = state["stages"]["qat"]["module"]
    _, _, resumed = qat_pruner(digits, QAT_RECIPE)
    legacy = {**state, "stages": {name: value for name, value in state["stages"].items() if name != "qat"}}
    resumed.load_state_dict(with_stage_state(legacy, "qat", {"module": quantizers}))  # an earlier release's job checkpoint
    assert resumed.stage("qat").active
    for name, value in resumed.stage("qat").module.state_dict().items():
        assert torch.equal(value, quantizers[name]), name
    _, _, other = qat_pruner(digits, {**GMP, "quantization": {"qat": {"epochs": 2}}}, epochs=5)
    with pytest.raises(StateError, match="begins at step 46, this run's at step 69"):
        other.load_state_dict(state)


# -- the recipe section and the main job ---------------------------------------------------------


def run_spec(**qat: object) -> RunSpec:
    return RunSpec.from_mapping({**TINY_RUN, **GMP, "quantization": {"qat": qat}})


@pytest.mark.parametrize(
    ("qat", "field", "hint"),
    [
        ({"epochs": 0}, "quantization.qat.epochs", "greater than or equal to 1"),
        ({"backend": "fbgemm"}, "quantization.qat.backend", "x86"),
        ({"epoch": 2}, "quantization.qat.epoch", "no such field"),
    ],
)
def test_bad_quantization_values_name_the_field(qat: dict, field: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint) as caught:
        run_spec(**qat)
    assert caught.value.field == field


def test_qat_may_not_begin_before_the_schedule_ends() -> None:
    # digits: 23 steps per epoch; the schedule's last update is at step 40 (epoch 2), training is 4 epochs
    check_run(run_spec(epochs=2))
    with pytest.raises(ConfigError, match="at most 2: QAT would start at epoch 1") as caught:
        check_run(run_spec(epochs=3))
    assert caught.value.field == "quantization.qat.epochs"
    with pytest.raises(ConfigError, match=r"at most train.epochs \(4\)"):
        check_run(run_spec(epochs=5))


def test_qat_refuses_regularizers_that_move_masks_every_step() -> None:
    mapping = {**TINY_RUN, "regularizer": {"type": "l0", "strength": 1e-4}, "quantization": {"qat": {"epochs": 1}}}
    del mapping["pruning"]
    with pytest.raises(ConfigError, match="L0 re-decides them") as caught:
        check_run(RunSpec.from_mapping(mapping))
    assert caught.value.field == "quantization.qat"


def test_shipped_qat_recipe_and_spec_round_trip() -> None:
    spec = RunSpec.from_yaml(default_recipe_path("gmp_qat"))
    assert spec.quantization.qat_enabled and spec.quantization.qat.epochs == 5
    assert RunSpec.from_mapping(spec.to_mapping()) == spec
    assert spec.with_overrides(epochs=50).quantization == spec.quantization
    assert spec.recipe.quantization == spec.quantization  # the run's Pruner gets the qat stage from it
    assert pa.Recipe.from_yaml(default_recipe_path("gmp_qat")) == spec.recipe.model_copy(update={"quantization": None})  # a run section
    assert "quantization" not in RunSpec.from_mapping(TINY_RUN).to_mapping()


def tiny_qat_spec(**train: object) -> RunSpec:
    return RunSpec.from_mapping({**TINY_RUN, **GMP, "quantization": {"qat": {"epochs": 2}}, "train": {**TINY_RUN["train"], **train}})


def test_main_job_reports_an_int8_row(tmp_path: Path) -> None:
    spec = tiny_qat_spec(dense_baseline=False)
    out = tmp_path / "run"
    prepare_run_directory(spec, out)
    result = run_job(spec, out, latency_batches=(1,))
    assert list(result.phases) == ["pruned", "int8"]
    pruned, int8 = result.phases["pruned"], result.phases["int8"]
    assert int8.accuracy > 0.85 and abs(int8.accuracy - pruned.accuracy) < 0.03
    assert int8.history[-1].test_loss != pruned.history[-1].test_loss, "the int8 row is measured on the int8 model"
    assert int8.summary.sparsity >= pruned.summary.sparsity == pytest.approx(0.8, abs=1e-3)
    assert int8.size.raw < 0.4 * pruned.size.raw  # int8 weights: a quarter of fp32, plus scales and zero points
    assert int8.latency[1].median_ms > 0
    header, rows = comparison_rows(result)
    assert header == ["metric", "pruned", "int8"]
    assert rows[0][2] == f"{int8.accuracy:.2%}"
    assert "int8 conversion after quantization-aware training" in render_markdown(result)
    checkpoint = torch.load(out / "pruned" / "checkpoint.pt", weights_only=True)
    assert any("activation_post_process" in key for key in checkpoint["pruner"]["stages"]["qat"]["module"])  # the qat stage's state


def test_crash_during_qat_then_resume_gives_identical_int8_model(tmp_path: Path) -> None:
    spec = tiny_qat_spec(dense_baseline=False)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    for folder in (straight, interrupted):
        prepare_run_directory(spec, folder)
    expected = run_job(spec, straight, latency_batches=())
    with pytest.raises(Crash):
        run_job(spec, interrupted, callbacks=[crash_at(85)], latency_batches=())  # epoch 4 of 4, the second QAT epoch
    resumed = run_job(spec, interrupted, latency_batches=())
    weights, resumed_weights = torch.load(straight / "pruned_model.pt"), torch.load(interrupted / "pruned_model.pt")
    for name in weights:
        assert torch.equal(weights[name], resumed_weights[name]), name
    quantizers = torch.load(straight / "pruned" / "checkpoint.pt")["pruner"]["stages"]["qat"]["module"]
    resumed_quantizers = torch.load(interrupted / "pruned" / "checkpoint.pt")["pruner"]["stages"]["qat"]["module"]
    for name in quantizers:
        assert torch.equal(quantizers[name], resumed_quantizers[name]), name
    assert resumed.phases["int8"].accuracy == expected.phases["int8"].accuracy
    assert resumed.phases["int8"].summary == expected.phases["int8"].summary
