"""Knowledge distillation as a stage: the student's training forwards are matched to a teacher's on the same inputs.

Recipe entry (``stages:``)::

    {type: distill, kl: 1.0, temperature: 2.0, layers: [encoder.layer.3], hidden: 1.0, task: 1.0}

The teacher is a frozen copy of the model when the Pruner is built (before any pruning), or the
model given to ``pruner.stage("distill").use_teacher(model)``. A forward hook on the student runs
the teacher on each training forward's inputs; the terms then join the loss in one of two ways:

- the output carries ``.loss`` (a Hugging Face model given labels, as under the Trainer): the
  terms are added to ``outputs.loss`` (scaled by ``task``), so the Trainer needs no change;
- otherwise ``pruner.penalty()`` returns them: ``loss = task_loss + pruner.penalty()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.context import Context
from pruneaware.core.registry import register_stage
from pruneaware.core.stage import Stage
from pruneaware.distill.losses import HiddenMatch, logit_kl
from pruneaware.distill.teacher import Capture, Teacher, check_layers, frozen_copy, logits_of
from pruneaware.core.errors import ConfigError, UsageError
from pruneaware.structured.surgery import ParameterRemap

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _no_op(*args: Any, **kwargs: Any) -> None:
    return None


class StudentHook:
    """The forward hook on the student; a deep copy of the student (a slim copy whose resources are measured) gets a
    hook that does nothing, instead of a copy of the stage, its teacher and its context."""

    def __init__(self, hook: Any):
        self.hook = hook

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.hook(*args, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return _no_op


@register_stage("distill")
class Distillation(Stage):
    """Logit KL (temperature ``T``) and hidden-state matching at ``layers`` against a frozen teacher."""

    name = "distill"
    follows_structure = True
    revives_pruned = False

    def __init__(
        self, kl: float = 1.0, temperature: float = 2.0, layers: Sequence[str] = (), teacher_layers: Sequence[str] | None = None,
        hidden: float = 1.0, hidden_loss: str = "mse", task: float = 1.0, teacher_dtype: str = "float32", cache: bool = False,
    ):
        for field, value in (("kl", kl), ("hidden", hidden), ("task", task)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"stages.distill.{field}", value, "a weight >= 0")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ConfigError("stages.distill.temperature", temperature, "a temperature > 0")
        if hidden_loss not in ("mse", "cosine"):
            raise ConfigError("stages.distill.hidden_loss", hidden_loss, ("mse", "cosine"))
        if teacher_dtype not in DTYPES:
            raise ConfigError("stages.distill.teacher_dtype", teacher_dtype, tuple(DTYPES))
        teacher_layers = list(layers) if teacher_layers is None else list(teacher_layers)
        if len(teacher_layers) != len(layers):
            raise ConfigError("stages.distill.teacher_layers", teacher_layers, f"one teacher layer per student layer ({len(layers)})")
        if kl == 0 and (hidden == 0 or not layers):
            raise ConfigError("stages.distill", {"kl": kl, "hidden": hidden, "layers": list(layers)}, "a term to distill: kl > 0, or layers with hidden > 0")
        self.kl, self.temperature, self.hidden, self.task = float(kl), float(temperature), float(hidden), float(task)
        self.layers, self.teacher_layers = list(layers), teacher_layers
        self.dtype, self.cache = DTYPES[teacher_dtype], cache
        self.match = HiddenMatch(hidden_loss)
        self.terms: dict[str, float] = {}
        self._pending: Tensor | None = None
        self._backward_seen = False

    def setup(self, ctx: Context) -> None:
        check_layers(ctx.module, self.layers, "stages.distill.layers")
        self.ctx = ctx
        self.use_teacher(frozen_copy(ctx.module, self.dtype if self.dtype != torch.float32 else None))
        self.capture = Capture(ctx.module, self.layers)
        self._hook = ctx.module.register_forward_hook(StudentHook(self._after_forward), with_kwargs=True)

    def use_teacher(self, model: nn.Module) -> None:
        """Distill from ``model`` instead of the frozen dense copy (frozen here: eval mode, no gradients)."""
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        self.teacher = Teacher(model, self.teacher_layers, self.dtype if self.dtype != torch.float32 else None, self.cache)

    @property
    def teacher_seconds(self) -> float:
        """Seconds spent in teacher forwards so far (cache hits cost none)."""
        return self.teacher.seconds

    def _after_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if not module.training or not torch.is_grad_enabled():
            self.capture.values.clear()
            return None
        inputs = kwargs if not args else args[0] if len(args) == 1 and not kwargs else (args, kwargs)
        if isinstance(inputs, tuple):
            raise UsageError("distillation runs the teacher on the student's inputs: call the model with positional or keyword arguments, not both")
        teacher = self.teacher(inputs)
        terms = self._terms(output, teacher)
        loss = getattr(output, "loss", None)
        if isinstance(loss, Tensor) and loss.requires_grad:
            output.loss = self.task * loss + terms  # the Trainer (and any loop reading outputs.loss) takes it as it is
            if isinstance(output, dict):
                output["loss"] = output.loss
            return output
        if self.task != 1.0:
            raise ConfigError("stages.distill.task", self.task, "1.0 when the model output has no .loss: weight your own task loss in the loop")
        self._pending = terms if self._pending is None else self._pending + terms
        self._backward_seen = False
        if isinstance(logits_of(output), Tensor) and logits_of(output).requires_grad:
            logits_of(output).register_hook(self._mark_backward)
        return None

    def _mark_backward(self, grad: Tensor) -> None:
        self._backward_seen = True

    def _terms(self, output: Any, teacher: dict[str, Tensor]) -> Tensor:
        total: Tensor | float = 0.0
        self.terms = {}
        if self.kl > 0:
            student_logits = logits_of(output)
            if student_logits is None or "logits" not in teacher:
                raise ConfigError("stages.distill.kl", self.kl, "0 for a model without logits (distill hidden states with layers: [...])")
            term = logit_kl(student_logits, teacher["logits"], self.temperature)
            self.terms["kl"] = float(term.detach())
            total = total + self.kl * term
        for student_layer, teacher_layer in zip(self.layers, self.teacher_layers):
            term = self.match(student_layer, self.capture.values.pop(student_layer), teacher[teacher_layer])
            self.terms[f"hidden:{student_layer}"] = float(term.detach())
            total = total + self.hidden * term
        if self.match.new_parameters and self.ctx.optimizer is not None:
            self.ctx.optimizer.add_param_group({"params": self.match.new_parameters, "weight_decay": 0.0})
            self.match.new_parameters = []
        return total  # type: ignore[return-value]

    def penalty(self, ctx: Context) -> Tensor | float:
        """The terms of the training forwards since the last call (those that went into ``outputs.loss`` excluded)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return 0.0
        if self._backward_seen:
            raise UsageError(
                "the distillation terms were read after loss.backward(): add pruner.penalty() to the loss before backward "
                "(loss = task_loss + pruner.penalty()), or give the model labels so the terms join outputs.loss"
            )
        return pending

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """The teacher is a separate copy; a hidden-state layer removed by depth pruning is read from its placeholder."""
        self.capture.refresh(ctx.module)

    def finalize(self, ctx: Context) -> None:
        self._hook.remove()
        self.capture.close()
        self.teacher.capture.close()
        self._pending = None
