"""Tiny user inputs built on the fly: a recipe, a factory module, an image folder, a Hugging Face folder and text files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

WORDS = "[PAD] [UNK] the a cat dog sat ran on under mat log big small red blue".split()

BYO_RECIPE = {
    "version": 1,
    "name": "byo",
    "pruning": {
        "criterion": "magnitude",
        "granularity": {"type": "element", "scope": "global"},
        "schedule": {"type": "cubic", "final": 0.5, "begin": 0.0, "end": 0.5, "every": 0.25, "unit": "fraction"},
    },
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "seed": 0, "eval_batch_size": 16, "log_every": 1, "threads": 1},
}

FACTORY_MODULE = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset


def make_model(num_classes, hidden=16):
    return nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def wrong_model():
    return nn.Sequential(nn.Linear(6, 5))


def make_data(seed=0, count=96):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return {"train": TensorDataset(x[:64], y[:64]), "test": TensorDataset(x[64:], y[64:]), "num_classes": 3}
'''


def write_recipe(folder: Path, **train: object) -> Path:
    spec = yaml.safe_load(yaml.safe_dump(BYO_RECIPE))
    spec["train"].update(train)
    path = folder / "byo.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def write_factory(folder: Path, name: str = "user_code") -> str:
    (folder / f"{name}.py").write_text(FACTORY_MODULE)
    return name


def write_image_folder(root: Path, classes: int = 2, per_class: int = 6, size: int = 20) -> Path:
    from PIL import Image

    rng = random.Random(0)
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            shade = 40 + 160 * label + rng.randint(-20, 20)
            pixels = bytes(max(0, min(255, shade + rng.randint(-30, 30))) for _ in range(size * size * 3))
            Image.frombytes("RGB", (size, size), pixels).save(root / f"class{label}" / f"{index}.png")
    return root


def save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({word: index for index, word in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)


def write_hf_folder(folder: Path, kind: str) -> Path:
    """A tiny randomly initialized Llama (causal LM) or BERT (classification, embeddings) with a word-level tokenizer."""
    import transformers

    save_tokenizer(folder)
    if kind == "causal_lm":
        config = transformers.LlamaConfig(
            vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
        )
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.BertConfig(
            vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=64, pad_token_id=0, num_labels=2,
        )
        model = (transformers.BertForSequenceClassification if kind == "classification" else transformers.BertModel)(config)
    model.save_pretrained(folder)
    return folder


def sentences(count: int, seed: int = 0) -> list[tuple[str, int]]:
    """Labelled sentences: label 1 when the sentence is about a cat."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        animal = rng.choice(["cat", "dog"])
        words = [rng.choice(["the", "a"]), rng.choice(["big", "small", "red", "blue"]), animal, rng.choice(["sat", "ran"]), rng.choice(["on", "under"]), "the", rng.choice(["mat", "log"])]
        rows.append((" ".join(words), int(animal == "cat")))
    return rows


def write_jsonl(path: Path, count: int = 48) -> Path:
    path.write_text("".join(json.dumps({"text": text, "label": ["dog", "cat"][label]}) + "\n" for text, label in sentences(count)))
    return path


def write_corpus(path: Path, count: int = 60) -> Path:
    path.write_text(" ".join(text for text, _ in sentences(count, seed=1)))
    return path
