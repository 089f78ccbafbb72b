"""Distilling a pruned sentence encoder into its dense self: cosine loss on embeddings, a short fine-tune driven by a Pruner."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.data.shakespeare import load_plays, speeches
from pruneaware.core.errors import UsageError
from pruneaware.core.driver import Pruner
from pruneaware.recipe import Recipe
from pruneaware.text.minilm import embed, tokenize

Batch = dict[str, Tensor]


def shakespeare_passages(split: str, count: int, seed: int = 0, **load_options: Any) -> list[str]:
    """``count`` spoken passages of the ``train`` or ``heldout`` plays, drawn without replacement under ``seed``."""
    pool = [passage for text in load_plays(split, **load_options).values() for passage in speeches(text)]  # type: ignore[arg-type]
    return random.Random(seed).sample(pool, min(count, len(pool)))


def token_batches(tokenizer: object, texts: Sequence[str], batch_size: int, max_length: int = 64) -> list[Batch]:
    """``texts`` tokenized in consecutive batches of ``batch_size`` (the last one may be shorter)."""
    return [tokenize(tokenizer, texts[start : start + batch_size], max_length) for start in range(0, len(texts), batch_size)]


@torch.no_grad()
def embed_batches(model: nn.Module, batches: Sequence[Batch]) -> list[Tensor]:
    """The model's sentence embeddings for every batch: the teacher's targets, computed once and reused."""
    return [embed(model, batch) for batch in batches]


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean ``1 - cos`` between unit-norm student and teacher embeddings (0 when they agree)."""
    return (1.0 - (student * teacher).sum(-1)).mean()


@torch.no_grad()
def mean_cosine(model: nn.Module, batches: Sequence[Batch], targets: Sequence[Tensor]) -> float:
    """Mean cosine similarity between the model's embeddings and ``targets`` over all passages."""
    similarities = torch.cat([(embed(model, batch) * target).sum(-1) for batch, target in zip(batches, targets)])
    return float(similarities.mean())


def distill(
    student: nn.Module,
    recipe: Recipe,
    batches: Sequence[Batch],
    targets: Sequence[Tensor],
    *,
    lr: float = 1e-4,
    dropout: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Pruner:
    """Fine-tune ``student`` on ``batches`` toward the teacher's embeddings ``targets`` while ``recipe`` prunes it; one step per batch.

    AdamW over the trainable parameters with the learning rate decaying linearly to 0; the loss
    gets ``pruner.penalty()`` (soft movement's and other regularizers' terms). The student trains
    with its own dropout unless ``dropout=False``: a copy of the teacher in eval mode starts at
    the loss's minimum, where every gradient is exactly zero and movement scores have nothing to
    accumulate until pruning perturbs the model. Returns the finalized pruner (student left in
    eval mode), whose ``summary()`` counts the sparsity from the weights.
    """
    steps = len(batches)
    if steps == 0 or steps != len(targets):
        raise UsageError(f"distill needs one teacher target per batch and at least one batch, got {steps} batches and {len(targets)} targets")
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    pruner = Pruner(student, optimizer, recipe, total_steps=steps)
    student.train(dropout)
    for step, (batch, target) in enumerate(zip(batches, targets), start=1):
        loss = distillation_loss(embed(student, batch), target) + pruner.penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, float(loss.detach()))
    student.eval()
    pruner.finalize()
    return pruner


def prune_without_training(model: nn.Module, recipe: Recipe) -> Pruner:
    """Apply a recipe whose only update is at step 0 (one-shot pruning of a trained model) and finalize it: no fine-tuning."""
    pruner = Pruner(model, None, recipe, total_steps=0)
    pruner.finalize()
    return pruner
