"""Save/load of slimmed models (safetensors + spec, no pickle) and ONNX export checked with onnxruntime."""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core.errors import ConfigError, StateError, UsageError
from pruneaware.export import read_spec
from pruneaware.models import build_model

safe_open = pytest.importorskip("safetensors").safe_open
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

torch.set_num_threads(1)
IMAGES = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def slimmed(build: Callable[[], nn.Module], inputs: torch.Tensor) -> nn.Module:
    """A model with half of its channels removed (at step 0, so no training is needed), in eval mode.

    One train-mode forward sets the norms' running statistics, so outputs are not vanishingly small.
    """
    torch.manual_seed(0)
    model = build()
    recipe = {"structured": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}}}
    pa.Pruner(model, None, recipe, total_steps=10, example_inputs=inputs)
    with torch.no_grad():
        model.train()(inputs)
    return model.eval()


def resnet20() -> nn.Module:
    return build_model("resnet20", (3, 16, 16), 10)


def torchvision_model(name: str) -> Callable[[], nn.Module]:
    models = pytest.importorskip("torchvision.models")
    return lambda: getattr(models, name)(num_classes=10)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- save / load -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "mobilenet_v2"])
def test_loaded_slim_model_computes_exactly_what_the_saved_one_did(tmp_path: Path, name: str) -> None:
    build = resnet20 if name == "resnet20" else torchvision_model(name)
    inputs = IMAGES if name == "resnet20" else F.interpolate(IMAGES, size=32)
    model = slimmed(build, inputs)
    assert parameter_count(model) < 0.35 * parameter_count(build()), "channels were not removed"
    pa.save(model, tmp_path / name, metadata={"model": name})
    loaded = pa.load(tmp_path / name, build).eval()
    with torch.no_grad():
        outputs = model(inputs)
        assert torch.equal(loaded(inputs), outputs) and outputs.abs().max() > 1e-3
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert sorted(p.name for p in tmp_path.joinpath(name).iterdir()) == ["model.safetensors", "spec.json"]
    assert read_spec(tmp_path / name).metadata == {"model": name}


class Attention(nn.Module):
    """Self-attention that reads its sizes from int attributes, as Hugging Face attention does."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.head_dim = width // heads
        self.all_head_size = width
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(batch, length, self.all_head_size))


class TinyTransformer(nn.Module):
    """Every layer kind whose sizes channel removal changes, with the output layer tied to the embedding."""

    def __init__(self, width: int = 16, heads: int = 4, vocab: int = 20):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.attention = Attention(width, heads)
        self.mha = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, 3, padding=1, groups=heads)
        self.group_norm = nn.GroupNorm(heads, width)
        self.lstm = nn.LSTM(width, width, batch_first=True)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = x + self.attention(x)
        x = x + self.mha(x, x, x, need_weights=False)[0]
        x = self.norm(x)
        x = x + self.group_norm(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return self.head(self.lstm(x)[0])


def test_attention_norms_rnns_and_tied_weights_are_resized_and_stay_tied(tmp_path: Path) -> None:
    torch.manual_seed(0)
    slim = TinyTransformer(width=8, heads=2).eval()  # what removing half the channels and heads leaves
    tokens = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(1))
    pa.save(slim, tmp_path / "tiny")
    loaded = pa.load(tmp_path / "tiny", TinyTransformer).eval()
    with torch.no_grad():
        assert torch.equal(loaded(tokens), slim(tokens))
    assert loaded.head.weight is loaded.embed.weight
    assert (loaded.attention.num_heads, loaded.attention.head_dim, loaded.mha.head_dim) == (2, 4, 4)
    assert loaded.norm.normalized_shape == (8,) and loaded.group_norm.num_groups == 2
    with safe_open(str(tmp_path / "tiny" / "model.safetensors"), "pt") as stored:
        assert len({"head.weight", "embed.weight"} & set(stored.keys())) == 1, "tied weight stored twice"


def test_load_unpickles_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = slimmed(resnet20, IMAGES)
    pa.save(model, tmp_path / "model")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    for owner, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(owner, name, refuse)
    pa.load(tmp_path / "model", resnet20)


def test_saving_again_replaces_the_folder_as_a_whole(tmp_path: Path) -> None:
    pa.save(resnet20(), tmp_path / "model")
    model = slimmed(resnet20, IMAGES)
    pa.save(model, tmp_path / "model")
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "a staging folder was left behind"
    loaded = pa.load(tmp_path / "model", resnet20).eval()
    with torch.no_grad():
        assert torch.equal(loaded(IMAGES), model(IMAGES))
    (tmp_path / "other").mkdir()
    with pytest.raises(UsageError, match="is not a saved model; refusing to overwrite"):
        pa.save(model, tmp_path / "other")


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metadata"):
        pa.save(resnet20(), tmp_path / "model", metadata={"when": object()})
    assert not list(tmp_path.iterdir())


# -- load errors -----------------------------------------------------------------------------------


def test_a_folder_without_a_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no spec.json in .*not a folder written by pruneaware.save"):
        pa.load(tmp_path, resnet20)


def test_a_spec_of_another_format_version_is_refused(tmp_path: Path) -> None:
    pa.save(resnet20(), tmp_path / "model")
    spec_file = tmp_path / "model" / "spec.json"
    spec_file.write_text(spec_file.read_text().replace('"version": 1', '"version": 2'))
    with pytest.raises(StateError, match="spec format version 2; this pruneaware reads version 1"):
        pa.load(tmp_path / "model", resnet20)


def test_a_different_architecture_is_refused_naming_the_modules(tmp_path: Path) -> None:
    pa.save(slimmed(resnet20, IMAGES), tmp_path / "model")

    def renamed() -> nn.Module:
        model = resnet20()
        model.head = model.fc
        del model.fc
        return model

    with pytest.raises(StateError, match=r"missing from the built model: 'fc'.*does not have: 'head'"):
        pa.load(tmp_path / "model", renamed)

    def other_norm() -> nn.Module:
        model = resnet20()
        model.stem[1] = nn.GroupNorm(4, 16)
        return model

    with pytest.raises(StateError, match=r"'stem.1' \(saved BatchNorm2d, built GroupNorm\)"):
        pa.load(tmp_path / "model", other_norm)
    with pytest.raises(UsageError, match="must return an nn.Module"):
        pa.load(tmp_path / "model", lambda: None)


class Heads(nn.Module):
    """Keeps its head count in a plain attribute."""

    def __init__(self, heads: int = 4):
        super().__init__()
        self.num_heads = heads


class FixedHeads(nn.Module):
    """The same module in a version where the head count is read-only."""

    __qualname__ = "Heads"
    num_heads = property(lambda self: 4)


def test_an_attribute_that_cannot_be_resized_is_named(tmp_path: Path) -> None:
    pa.save(nn.Sequential(Heads(2)), tmp_path / "model")
    with pytest.raises(StateError, match=r"cannot resize 0.num_heads of Heads to 2"):
        pa.load(tmp_path / "model", lambda: nn.Sequential(FixedHeads()))


# -- ONNX ------------------------------------------------------------------------------------------


def test_slim_onnx_matches_onnxruntime_and_shrinks_with_the_parameters(tmp_path: Path) -> None:
    dense = resnet20().eval()
    slim = slimmed(resnet20, IMAGES)
    dense_report = pa.export_onnx(dense, IMAGES, tmp_path / "dense.onnx")
    slim_report = pa.export_onnx(slim, IMAGES, tmp_path / "slim.onnx")
    assert dense_report.max_abs_diff < 1e-4 and slim_report.max_abs_diff < 1e-4
    size_ratio = slim_report.file_size_bytes / dense_report.file_size_bytes
    parameter_ratio = slim_report.parameters / dense_report.parameters
    assert parameter_ratio < 0.35
    assert abs(size_ratio / parameter_ratio - 1) < 0.15, (size_ratio, parameter_ratio)
    assert slim_report.file_size_bytes == (tmp_path / "slim.onnx").stat().st_size
    session = onnxruntime.InferenceSession(str(tmp_path / "slim.onnx"), providers=["CPUExecutionProvider"])
    batch = torch.randn(7, 3, 16, 16)  # the batch dimension is dynamic
    (logits,) = session.run(None, {"input_0": batch.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), slim(batch), atol=1e-4)


def test_masked_model_exports_with_its_zeros(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = resnet20()
    schedule = {"type": "one_shot", "sparsity": 0.8, "at": 0, "unit": "step"}
    granularity = {"type": "element", "scope": "global"}
    recipe = pa.Recipe.from_dict({"pruning": {"schedule": schedule, "granularity": granularity}})
    pruner = pa.Pruner(model, None, recipe, total_steps=10)
    pruner.finalize()
    model.train()
    report = pa.export_onnx(model, IMAGES, tmp_path / "masked.onnx")
    assert report.max_abs_diff < 1e-4
    assert model.training and model.stem[1].training, "train mode was not restored"
    pruned = sum(int((p == 0).sum()) for p in pruner.params.values())
    graph = onnx.load(str(tmp_path / "masked.onnx")).graph
    exported = sum(int((onnx.numpy_helper.to_array(t) == 0).sum()) for t in graph.initializer)
    assert pruned > 0.75 * sum(p.numel() for p in pruner.params.values())
    assert exported >= pruned, "pruned weights lost their zeros in the export"


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:Exporting a model to ONNX with a batch_size")
def test_attention_model_with_tied_weights_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyTransformer(width=8, heads=2).eval()
    tokens = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(1))
    assert pa.export_onnx(model, tokens, tmp_path / "tiny.onnx").max_abs_diff < 1e-4


def test_export_refuses_old_opsets_and_names_missing_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="opset"):
        pa.export_onnx(resnet20(), IMAGES, tmp_path / "model.onnx", opset=13)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UsageError, match=r"onnxruntime is not installed.*pip install 'pruneaware\[export\]'"):
        pa.export_onnx(resnet20(), IMAGES, tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(UsageError, match=r"safetensors is not installed"):
        pa.save(resnet20(), tmp_path / "model")
    assert not list(tmp_path.iterdir())


def test_spec_is_plain_json_with_shapes_and_attributes(tmp_path: Path) -> None:
    pa.save(slimmed(resnet20, IMAGES), tmp_path / "model")
    spec = json.loads((tmp_path / "model" / "spec.json").read_text())
    assert (spec["format"], spec["version"]) == ("pruneaware-model", 1)
    conv = spec["modules"]["stages.0.0.conv1"]
    assert conv["type"] == "Conv2d" and conv["attributes"]["out_channels"] < 16
    assert spec["tensors"]["stages.0.0.conv1.weight"]["shape"][0] == conv["attributes"]["out_channels"]
