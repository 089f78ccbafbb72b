"""``train.dataset`` resolved: a built-in name, an image folder, a CSV/JSONL/text file or a ``package.module:function``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from pruneaware.data import DATASETS, load_dataset
from pruneaware.data.factory import load_factory_data
from pruneaware.data.images import load_image_folder
from pruneaware.data.splits import DatasetSplits
from pruneaware.data.text import column, corpus_splits, encode_labels, numeric_features, read_rows, table_splits, tokenize
from pruneaware.core.errors import ConfigError
from pruneaware.models.imports import is_reference

TABLE_SUFFIXES = (".csv", ".jsonl")
TEXT_SUFFIXES = (".txt", ".md")


def load_data(reference: str, options: dict[str, Any], *, seed: int, task: str, tokenizer: Any = None) -> DatasetSplits:
    """The train/validation splits named by ``reference``; ``tokenizer`` encodes text files (from the model folder)."""
    if reference in DATASETS.names():
        return load_dataset(reference, seed=seed, **options)
    if is_reference(reference):
        return load_factory_data(reference, seed=seed, **options)
    path = Path(reference).expanduser()
    if path.is_dir():
        return load_image_folder(path, seed=seed, **options)
    if path.is_file() and path.suffix in TABLE_SUFFIXES + TEXT_SUFFIXES:
        return _load_text_file(path, options, seed=seed, task=task, tokenizer=tokenizer)
    expected = f"a built-in dataset ({', '.join(DATASETS.names())}), an image folder, a {'/'.join(TABLE_SUFFIXES + TEXT_SUFFIXES)} file or 'package.module:function'"
    raise ConfigError("train.dataset", reference, expected + ("" if path.suffix or path.exists() else f" (no file or folder {str(path)!r})"))


def _load_text_file(path: Path, options: dict[str, Any], *, seed: int, task: str, tokenizer: Any) -> DatasetSplits:
    options = dict(options)
    text_column, label_column = options.pop("text_column", "text"), options.pop("label_column", "label")
    fraction, max_length, block_size = options.pop("val_fraction", 0.1), options.pop("max_length", 128), options.pop("block_size", 128)
    if options:
        raise ConfigError("train.data_options", sorted(options), "text_column, label_column, val_fraction, max_length or block_size for text files")
    needs_tokenizer = task != "classification" or path.suffix in TEXT_SUFFIXES
    if needs_tokenizer and tokenizer is None:
        raise ConfigError("train.model", str(path), "a Hugging Face model folder (its tokenizer encodes the text), or data_options.tokenizer set to one")
    if path.suffix in TEXT_SUFFIXES:
        if task != "causal_lm":
            raise ConfigError("train.task", task, f"'causal_lm' for a plain text corpus ({path.name}); classification and embeddings read .csv/.jsonl rows")
        return corpus_splits(_read_text(path), tokenizer, block_size=block_size, fraction=fraction, path=path)
    rows = read_rows(path)
    if task == "causal_lm":
        return corpus_splits("\n\n".join(map(str, column(rows, text_column, path, "text_column"))), tokenizer, block_size=block_size, fraction=fraction, path=path)
    if task == "embedding":
        ids = tokenize(tokenizer, column(rows, text_column, path, "text_column"), max_length)
        return table_splits(ids, torch.zeros(len(ids), dtype=torch.long).numpy(), 0, seed=seed, fraction=fraction, path=path)
    labels, classes = encode_labels(column(rows, label_column, path, "label_column"))
    if text_column in rows[0] and tokenizer is not None:
        inputs = tokenize(tokenizer, column(rows, text_column, path, "text_column"), max_length)
    else:
        inputs = numeric_features(rows, label_column, path)
    return table_splits(inputs, labels, len(classes), seed=seed, fraction=fraction, path=path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError("train.dataset", str(path), f"a UTF-8 text file ({error.reason} at byte {error.start})") from None


def with_targets(splits: DatasetSplits, targets: tuple[torch.Tensor, torch.Tensor]) -> DatasetSplits:
    """The same inputs with new targets (the starting model's embeddings, which the pruned encoder must keep)."""
    train = TensorDataset(splits.train.tensors[0], targets[0])  # type: ignore[attr-defined]
    test = TensorDataset(splits.test.tensors[0], targets[1])  # type: ignore[attr-defined]
    return DatasetSplits(train, test, splits.input_shape, splits.num_classes, splits.name)
