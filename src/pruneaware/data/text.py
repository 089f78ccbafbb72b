"""CSV, JSONL and plain-text files: labelled rows for classification, texts for embeddings, a corpus for causal LM."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from pruneaware.data.splits import DatasetSplits, make_splits
from pruneaware.core.errors import ConfigError

FIELD = "train.dataset"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``.csv`` (header line first) or ``.jsonl`` (one JSON object per line) file."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            if path.suffix == ".csv":
                rows = list(csv.DictReader(stream))
            else:
                rows = [_json_row(line, number, path) for number, line in enumerate(stream, 1) if line.strip()]
    except UnicodeDecodeError as error:
        raise ConfigError(FIELD, str(path), f"a UTF-8 text file ({error.reason} at byte {error.start})") from None
    if not rows:
        raise ConfigError(FIELD, str(path), "a file with at least one row")
    return rows


def _json_row(line: str, number: int, path: Path) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ConfigError(FIELD, f"{path}:{number}", f"one JSON object per line ({error.msg})") from None
    if not isinstance(row, dict):
        raise ConfigError(FIELD, f"{path}:{number}", "one JSON object per line")
    return row


def column(rows: list[dict[str, Any]], name: str, path: Path, option: str) -> list[Any]:
    """Every row's ``name`` value; names the rows' columns and the option to set when it is missing."""
    missing = next((number for number, row in enumerate(rows, 1) if name not in row), None)
    if missing is not None:
        raise ConfigError(f"train.data_options.{option}", name, f"a column of {path} (row {missing} has {sorted(rows[missing - 1])})")
    return [row[name] for row in rows]


def encode_labels(values: list[Any]) -> tuple[np.ndarray, list[str]]:
    """Integer labels as they are; any other labels become indices of their sorted distinct values."""
    if all(isinstance(v, int) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()) for v in values):
        labels = np.asarray([int(v) for v in values], dtype=np.int64)
        if labels.min() < 0:
            raise ConfigError("train.data_options.label_column", int(labels.min()), "labels that are class indices >= 0")
        return labels, [str(index) for index in range(int(labels.max()) + 1)]
    classes = sorted({str(v) for v in values})
    lookup = {name: index for index, name in enumerate(classes)}
    return np.asarray([lookup[str(v)] for v in values], dtype=np.int64), classes


def numeric_features(rows: list[dict[str, Any]], label_column: str, path: Path) -> np.ndarray:
    """Every column but the label as float features (tabular data without a text column)."""
    names = [name for name in rows[0] if name != label_column]
    try:
        return np.asarray([[float(row[name]) for name in names] for row in rows], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(FIELD, str(path), f"numeric feature columns besides {label_column!r}, or a text column with a tokenizer ({error})") from None


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> torch.Tensor:
    """Token ids padded to ``max_length`` (the attention mask is rebuilt from the pad id by the model adapter)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    encoded = tokenizer([str(text) for text in texts], padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return encoded["input_ids"].long()


def split_indices(count: int, fraction: float, seed: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < fraction < 1:
        raise ConfigError("train.data_options.val_fraction", fraction, "a fraction between 0 and 1")
    if count < 2:
        raise ConfigError(FIELD, str(path), f"at least 2 rows for a training and a validation split (it has {count})")
    order = np.random.default_rng(seed).permutation(count)
    held = min(max(1, round(fraction * count)), count - 1)
    return np.sort(order[held:]), np.sort(order[:held])


def table_splits(inputs: np.ndarray | torch.Tensor, labels: np.ndarray, num_classes: int, *, seed: int, fraction: float, path: Path) -> DatasetSplits:
    """Seeded train/validation split; float features are standardized by train statistics, token ids kept as they are."""
    train, test = split_indices(len(labels), fraction, seed, path)
    if isinstance(inputs, np.ndarray):
        return make_splits(inputs[train], labels[train], inputs[test], labels[test], num_classes=num_classes, name=str(path))
    targets = torch.from_numpy(labels)
    return DatasetSplits(TensorDataset(inputs[train], targets[train]), TensorDataset(inputs[test], targets[test]), tuple(inputs.shape[1:]), num_classes, str(path))


def corpus_splits(text: str, tokenizer: Any, *, block_size: int, fraction: float, path: Path) -> DatasetSplits:
    """Blocks of ``block_size`` tokens; the last ``fraction`` of the text (at least one block) is held out for perplexity."""
    if block_size < 2:
        raise ConfigError("train.data_options.block_size", block_size, "at least 2 tokens")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    blocks = len(ids) // block_size
    if blocks < 2:
        raise ConfigError(
            FIELD, str(path), f"a text of at least {2 * block_size} tokens: one training and one validation block of "
            f"data_options.block_size={block_size} (it has {len(ids)} tokens); add text or lower block_size"
        )
    tensor = torch.tensor(ids[: blocks * block_size], dtype=torch.long).view(blocks, block_size)
    held = min(max(1, round(fraction * blocks)), blocks - 1)
    train, test = tensor[:-held], tensor[-held:]
    vocabulary = len(tokenizer)
    return DatasetSplits(TensorDataset(train, train), TensorDataset(test, test), (block_size,), vocabulary, str(path))
