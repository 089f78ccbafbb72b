"""Language-model evaluation data and perplexity: fixed token windows from a text, mean next-token loss over them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError


def spaced_windows(tokens: Tensor, length: int, count: int) -> Tensor:
    """``count`` windows of ``length`` tokens at evenly spaced starts over the whole stream (deterministic), shape (count, length)."""
    _check_windows(tokens, length, count)
    starts = torch.linspace(0, tokens.numel() - length, count).round().long()
    return torch.stack([tokens[start : start + length] for start in starts.tolist()])


def random_windows(tokens: Tensor, length: int, count: int, *, seed: int) -> Tensor:
    """``count`` windows of ``length`` tokens at seeded random starts, shape (count, length)."""
    _check_windows(tokens, length, count)
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - length + 1, (count,), generator=generator)
    return torch.stack([tokens[start : start + length] for start in starts.tolist()])


def _check_windows(tokens: Tensor, length: int, count: int) -> None:
    if length < 2 or count < 1:
        raise ConfigError("windows", f"{count} x {length} tokens", "at least one window of at least 2 tokens")
    if tokens.dim() != 1 or tokens.numel() < length:
        raise ConfigError("tokens", tuple(tokens.shape), f"a 1-D token stream of at least {length} tokens")


def next_token_loss(model: nn.Module, ids: Tensor) -> Tensor:
    """Mean cross-entropy of predicting every token of ``ids`` (batch, seq) from those before it."""
    output = model(ids)
    logits = output.logits if hasattr(output, "logits") else output
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


@torch.no_grad()
def perplexity(model: nn.Module, windows: Tensor, *, batch_size: int = 4) -> float:
    """exp(mean next-token loss) over all windows, every predicted token weighted equally; the model is left in its mode."""
    training = model.training
    model.eval()
    try:
        total = sum(next_token_loss(model, batch).item() * batch.shape[0] for batch in windows.split(batch_size))
    finally:
        model.train(training)
    return math.exp(total / windows.shape[0])
