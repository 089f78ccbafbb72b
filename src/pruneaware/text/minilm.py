"""A sentence encoder from a local folder (the ``minilm`` asset): mean-pooled, L2-normalized token states."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pruneaware.data.assets import asset_path
from pruneaware.core.errors import ConfigError, StateError

ENCODER_SCOPE = {"modules": ["Linear"], "include": ["encoder.layer.*"], "skip_last": False}
"""Recipe scope for a BERT encoder: every Linear of the transformer layers (q, k, v, attention output, FFN); embeddings and pooler stay dense."""


def load_encoder(folder: str | Path | None = None) -> tuple[nn.Module, object]:
    """The model and tokenizer saved in ``folder`` (default: the ``minilm`` asset), read offline; the model in eval mode."""
    from transformers import AutoModel, AutoTokenizer  # heavy import, only when an encoder is loaded
    from safetensors import SafetensorError

    folder = Path(folder) if folder is not None else asset_path("minilm")
    _check_mean_pooling(folder)
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    except SafetensorError as error:
        raise StateError(
            f"{folder / 'model.safetensors'} is damaged or incomplete ({error}); delete {folder} and fetch it again "
            "(`pruneaware fetch minilm` for the asset) or copy it again"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def _check_mean_pooling(folder: Path) -> None:
    """Refuse a sentence-transformers folder whose pooling is not the mean over tokens this module computes."""
    config = folder / "1_Pooling" / "config.json"
    if config.is_file() and not json.loads(config.read_text()).get("pooling_mode_mean_tokens", False):
        raise ConfigError("encoder pooling", str(config), "a model pooled by the mean over tokens (pooling_mode_mean_tokens: true)")


def tokenize(tokenizer: object, texts: Sequence[str], max_length: int = 64) -> dict[str, Tensor]:
    """Token ids and attention mask for ``texts``, truncated to ``max_length`` and padded to the longest."""
    return dict(tokenizer(list(texts), max_length=max_length, truncation=True, padding=True, return_tensors="pt"))  # type: ignore[operator]


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of the token states over the real (unpadded) tokens."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


def embed(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Sentence embeddings: mean-pooled last hidden state, L2-normalized (the all-MiniLM-L6-v2 recipe)."""
    hidden = model(**batch).last_hidden_state
    return F.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
