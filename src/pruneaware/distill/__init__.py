"""Knowledge distillation: a frozen teacher (timed, optionally cached or in lower precision) and the loss terms."""

from pruneaware.distill.losses import HiddenMatch, logit_kl
from pruneaware.distill.teacher import Teacher, frozen_copy

__all__ = ["HiddenMatch", "Teacher", "frozen_copy", "logit_kl"]
