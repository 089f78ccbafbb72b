"""Data sources of the main job: image folders, CSV/JSONL rows, text corpora and factories, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pruneaware.data.batches import head
from pruneaware.data.sources import load_data
from pruneaware.core.errors import ConfigError
from pruneaware.job.device import select_device
from tests.byo_helpers import save_tokenizer, write_image_folder


def test_image_folder_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "images", classes=2, per_class=5)
    splits = load_data(str(root), {"image_size": 16, "val_fraction": 0.4}, seed=0, task="classification")
    assert (len(splits.train), len(splits.test), splits.num_classes, splits.input_shape) == (6, 4, 2, (3, 16, 16))
    assert sorted(head(splits.test, 4)[1].tolist()) == [0, 0, 1, 1]
    again = load_data(str(root), {"image_size": 16, "val_fraction": 0.4}, seed=0, task="classification")
    assert again.test.indices == splits.test.indices


def test_image_folder_with_train_and_val_subfolders(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images" / "train", per_class=3)
    write_image_folder(tmp_path / "images" / "val", per_class=2)
    splits = load_data(str(tmp_path / "images"), {"image_size": 8}, seed=0, task="classification")
    assert (len(splits.train), len(splits.test)) == (6, 4)


def test_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="one subfolder of images per class"):
        load_data(str(tmp_path / "empty"), {}, seed=0, task="classification")
    write_image_folder(tmp_path / "one", per_class=1)
    with pytest.raises(ConfigError, match="at least 2 images per class"):
        load_data(str(tmp_path / "one"), {}, seed=0, task="classification")


def test_csv_numeric_features_and_named_labels(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    splits = load_data(str(path), {"val_fraction": 0.25}, seed=1, task="classification")
    assert (splits.num_classes, splits.input_shape, len(splits.train), len(splits.test)) == (2, (2,), 15, 5)
    inputs, labels = splits.train.tensors
    assert abs(float(inputs.mean())) < 0.2 and set(labels.tolist()) == {0, 1}  # standardized; 'no' -> 0, 'yes' -> 1


def test_jsonl_errors_name_the_line_and_the_column(tmp_path: Path) -> None:
    save_tokenizer(tmp_path / "tok")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "the cat", "label": 1}) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"rows.jsonl:2.*one JSON object per line"):
        load_data(str(path), {}, seed=0, task="classification", tokenizer=tokenizer)
    path.write_text(json.dumps({"sentence": "the cat", "label": 1}) + "\n")
    with pytest.raises(ConfigError, match="text_column"):
        load_data(str(path), {}, seed=0, task="embedding", tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="Hugging Face model folder"):
        load_data(str(path), {}, seed=0, task="causal_lm")


def test_factory_data_counts_classes_from_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user_data_d.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset, DataLoader\n"
        "def pair(count=10):\n    x = torch.randn(count, 3)\n    y = torch.arange(count) % 4\n"
        "    return DataLoader(TensorDataset(x, y), batch_size=2), TensorDataset(x[:4], y[:4])\n"
        "def bad():\n    return 42\n"
    )
    splits = load_data("user_data_d:pair", {"count": 12}, seed=0, task="classification")
    assert (splits.num_classes, splits.input_shape, len(splits.train)) == (4, (3,), 12)
    with pytest.raises(ConfigError, match="it returned int"):
        load_data("user_data_d:bad", {}, seed=0, task="classification")
    with pytest.raises(ConfigError, match="keyword arguments"):
        load_data("user_data_d:pair", {"size": 3}, seed=0, task="classification")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_refused() -> None:
    assert select_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        select_device("cuda")
