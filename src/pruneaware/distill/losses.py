"""Distillation loss terms: logit KL with a temperature, and hidden-state matching through learned projections."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError


def logit_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` averaged over every position (the last axis holds the classes)."""
    if student.shape != teacher.shape:
        raise ConfigError(
            "distill.teacher", f"logits of shape {tuple(teacher.shape)}",
            f"the student's logit shape {tuple(student.shape)}: the teacher must predict the same classes for the same inputs",
        )
    classes = student.shape[-1]
    s = F.log_softmax(student.float().reshape(-1, classes) / temperature, dim=-1)
    t = F.log_softmax(teacher.float().reshape(-1, classes) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


class HiddenMatch(nn.Module):
    """Mean squared error (or ``1 - cosine``) between student and teacher hidden states, projected where widths differ.

    A projection ``Linear(student width, teacher width)`` is created the first time a layer's
    widths differ (``new_parameters`` then lists it for the optimizer); equal widths are compared as they are.
    """

    def __init__(self, kind: str = "mse"):
        super().__init__()
        self.kind = kind
        self.projections = nn.ModuleDict()
        self.new_parameters: list[nn.Parameter] = []

    def forward(self, name: str, student: Tensor, teacher: Tensor) -> Tensor:
        if student.shape[:-1] != teacher.shape[:-1]:
            raise ConfigError(
                f"distill.layers[{name!r}]", f"teacher hidden states of shape {tuple(teacher.shape)}",
                f"the student's {tuple(student.shape)} in every axis but the last (the width, which a projection bridges)",
            )
        key = name.replace(".", "/")
        if student.shape[-1] != teacher.shape[-1] and key not in self.projections:
            projection = nn.Linear(student.shape[-1], teacher.shape[-1], bias=False).to(student.device)
            self.projections[key] = projection
            self.new_parameters += list(projection.parameters())
        if key in self.projections:
            student = self.projections[key](student.float())
        student, teacher = student.float(), teacher.float()
        if self.kind == "cosine":
            return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
        return F.mse_loss(student, teacher)
