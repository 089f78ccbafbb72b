"""What a model is trained for: the loss, the validation metric, and the output shape that fits the data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from pruneaware.core.errors import ConfigError

TASKS = ("classification", "causal_lm", "embedding")


@dataclass(frozen=True)
class Task:
    """A loss to train on and a metric to report; ``totals`` sums both over a batch so evaluation can average exactly."""

    name: str
    metric: str
    higher_is_better: bool

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total, _, count = self.totals(outputs, targets)
        return total / count

    def totals(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """(summed loss, summed metric numerator, count) of one batch."""
        outputs = outputs.float()
        if self.name == "classification":
            loss = F.cross_entropy(outputs, targets, reduction="sum")
            return loss, float((outputs.detach().argmax(1) == targets).sum()), len(targets)
        if self.name == "causal_lm":  # predict token t+1 from tokens up to t
            logits, labels = outputs[:, :-1].reshape(-1, outputs.shape[-1]), targets[:, 1:].reshape(-1)
            return F.cross_entropy(logits, labels, reduction="sum"), 0.0, labels.numel()
        cosine = F.cosine_similarity(outputs, targets.float(), dim=-1)
        return (1 - cosine).sum(), float(cosine.detach().sum()), len(cosine)

    def finish(self, loss_sum: float, metric_sum: float, count: int) -> tuple[float, float]:
        """Mean loss and the metric: accuracy, perplexity (exp of the mean token loss) or mean cosine similarity."""
        loss = loss_sum / count
        return loss, math.exp(min(loss, 700.0)) if self.name == "causal_lm" else metric_sum / count

    def check_outputs(self, outputs: object, targets: torch.Tensor, num_classes: int, model: str) -> None:
        """Refuse, before training, a model whose output cannot be scored against the data's targets."""
        shape = list(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        batch = len(targets)
        if self.name == "classification":
            fits = isinstance(outputs, torch.Tensor) and outputs.dim() == 2 and list(outputs.shape) == [batch, num_classes]
            expected = f"a model returning logits of shape (batch, {num_classes}) for the {num_classes} classes of the data"
        elif self.name == "causal_lm":
            fits = isinstance(outputs, torch.Tensor) and outputs.dim() == 3 and outputs.shape[:2] == targets.shape and outputs.shape[-1] > int(targets.max())
            expected = f"a model returning (batch, {targets.shape[-1]}, vocabulary > {int(targets.max())}) next-token logits"
        else:
            fits = isinstance(outputs, torch.Tensor) and outputs.shape == targets.shape
            expected = f"a model returning (batch, {targets.shape[-1] if targets.dim() == 2 else '?'}) embeddings"
        if not fits:
            raise ConfigError("train.model", model, f"{expected}; on a batch of {batch} it returned {shape}")


CLASSIFICATION = Task("classification", "accuracy", True)
TASK_TABLE = {"classification": CLASSIFICATION, "causal_lm": Task("causal_lm", "perplexity", False), "embedding": Task("embedding", "cosine", True)}


def get_task(name: str) -> Task:
    if name not in TASK_TABLE:
        raise ConfigError("train.task", name, [*TASK_TABLE, "auto"])
    return TASK_TABLE[name]
