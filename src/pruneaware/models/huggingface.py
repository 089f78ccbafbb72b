"""A local Hugging Face model folder (offline) as a tensor-in, tensor-out module: token ids to logits or embeddings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneaware.core.errors import ConfigError

TASK_CLASSES = {"classification": "AutoModelForSequenceClassification", "causal_lm": "AutoModelForCausalLM", "embedding": "AutoModel"}


def is_model_folder(path: str | Path) -> bool:
    return Path(path).expanduser().is_dir() and (Path(path).expanduser() / "config.json").is_file()


def folder_task(folder: str | Path) -> str:
    """The task a folder's saved architecture does: ``...ForSequenceClassification``, ``...ForCausalLM``, else embeddings."""
    architectures = _config(folder).architectures or []
    name = architectures[0] if architectures else ""
    if name.endswith("ForSequenceClassification"):
        return "classification"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal_lm"
    return "embedding"


class HFAdapter(nn.Module):
    """Calls the wrapped model on token ids; padding (the tokenizer's pad id) is masked out, embeddings are mean-pooled."""

    def __init__(self, model: nn.Module, task: str, pad_token_id: int | None):
        super().__init__()
        self.model = model
        self.task = task
        self.pad_token_id = pad_token_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.task == "causal_lm":  # corpus blocks hold no padding
            return self.model(input_ids=input_ids).logits
        mask = (input_ids != self.pad_token_id).long() if self.pad_token_id is not None else torch.ones_like(input_ids)
        output = self.model(input_ids=input_ids, attention_mask=mask)
        if self.task == "classification":
            return output.logits
        weights = mask.unsqueeze(-1).to(output.last_hidden_state.dtype)
        return (output.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1)


def load_folder_model(folder: str | Path, task: str, num_classes: int, **options: Any) -> HFAdapter:
    """``from_pretrained`` of the folder for ``task``, with a classification head of ``num_classes`` (re-initialized if its size differs)."""
    transformers = _transformers()
    loader = getattr(transformers, TASK_CLASSES[task])
    if task == "classification":
        options = {"num_labels": num_classes, "ignore_mismatched_sizes": True, **options}
    try:
        model = loader.from_pretrained(str(folder), local_files_only=True, **options)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError("train.model", str(folder), f"a Hugging Face model folder loadable for {task} ({type(error).__name__}: {error})") from None
    pad = model.config.pad_token_id
    tokenizer = load_tokenizer(folder, required=False)
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        pad = tokenizer.pad_token_id
    elif pad is None and tokenizer is not None:
        pad = tokenizer.eos_token_id
    return HFAdapter(model, task, pad)


def load_tokenizer(folder: str | Path, required: bool = True) -> Any:
    """The tokenizer saved in ``folder``; ``None`` when there is none and it is not ``required``."""
    transformers = _transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        if not required:
            return None
        raise ConfigError("train.data_options.tokenizer", str(folder), f"a folder holding a saved tokenizer ({type(error).__name__}: {error})") from None


def _config(folder: str | Path) -> Any:
    try:
        return _transformers().AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError("train.model", str(folder), f"a Hugging Face model folder with a readable config.json ({error})") from None


def _transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never reaches the network
    try:
        import transformers
    except ImportError:
        raise ConfigError("train.model", "a Hugging Face folder", "the 'transformers' extra installed: pip install 'pruneaware[transformers]'") from None
    return transformers
