"""SmolLM2-135M from the offline ``smollm2`` asset: GGUF (Q4_1) weights dequantized to fp32 into a Hugging Face LlamaForCausalLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pruneaware.data.assets import asset_path
from pruneaware.core.errors import PruneawareError


def load_smollm2(path: str | Path | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)``: an fp32 LlamaForCausalLM in eval mode and its tokenizer, both read from the GGUF file.

    Transformers reads the GGUF metadata into a LlamaConfig and dequantizes every tensor with the
    ``gguf`` package (undoing llama.cpp's Q/K row permutation), so the model holds ordinary
    ``nn.Linear`` layers. ``path`` defaults to the asset (``pruneaware fetch smollm2``).
    """
    gguf_path = Path(path) if path is not None else asset_path("smollm2")
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF files)
    except ImportError:
        raise PruneawareError("loading GGUF weights needs the 'gguf' package: pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:  # the weights are plain fp32 now: nothing stays quantized
        model.hf_quantizer.remove_quantization_config(model)
        model.config._is_quantized = False
    return model.eval(), tokenizer


def encode(tokenizer: Any, texts: dict[str, str] | list[str]) -> torch.Tensor:
    """One 1-D token stream of all ``texts`` (a dict's values, in order), each followed by the end-of-text token."""
    parts = list(texts.values()) if isinstance(texts, dict) else list(texts)
    ids: list[int] = []
    for text in parts:
        ids.extend(tokenizer(text)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)
