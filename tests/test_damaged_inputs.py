"""Damaged files and unusable models get a pruneaware error naming the file or object and the fix, not a library's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import pruneaware as pa
from pruneaware.core.errors import StateError, UsageError
from pruneaware.recipe.shipped import default_recipe_path


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def truncate(file: Path, keep: float) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.5, 0.0001], ids=["half", "header-cut"])
def test_a_truncated_saved_model_names_the_file_and_the_fix(tmp_path: Path, keep: float) -> None:
    folder = pa.save(small(), tmp_path / "saved")
    truncate(folder / "model.safetensors", keep)
    with pytest.raises(StateError, match=r"saved/model\.safetensors is damaged or incomplete .* save the model again"):
        pa.load(folder, small)


def test_a_truncated_encoder_folder_names_the_file_and_how_to_fetch_it_again(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from pruneaware.text.minilm import load_encoder

    config = transformers.BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    transformers.BertModel(config).save_pretrained(tmp_path)
    truncate(tmp_path / "model.safetensors", 0.5)
    with pytest.raises(StateError, match=r"model\.safetensors is damaged or incomplete .* fetch it again"):
        load_encoder(tmp_path)


@pytest.mark.parametrize("recipe", ["default", "structured"])
def test_a_model_on_the_meta_device_is_refused_before_torch_fails(recipe: str) -> None:
    with torch.device("meta"):
        model = small()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UsageError, match=r"'0\.weight' of Sequential is on the meta device .*to_empty"):
        pa.Pruner(model, optimizer, default_recipe_path(recipe), steps_per_epoch=4, epochs=2, example_inputs=torch.randn(4, 8))


def test_structured_checks_refuse_a_meta_model_by_themselves() -> None:
    from pruneaware.structured.support import check_supported

    with torch.device("meta"):
        model = small()
    with pytest.raises(UsageError, match="structured pruning has nothing to rank"):
        check_supported(model, torch.randn(4, 8))
