"""QAT as a stage: the last epochs of a pruned run train through a fake-quantized capture, then convert to int8."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from pruneaware.core.errors import ConfigError, StateError, UsageError
from pruneaware.core.stage import Stage
from pruneaware.quantization import toolkit
from pruneaware.quantization.convert import Int8Model, convert_int8
from pruneaware.quantization.prepare import prepare_qat
from pruneaware.quantization.spec import QATSpec
from pruneaware.quantization.zeros import check_zeros_kept

if TYPE_CHECKING:
    from pruneaware.core.context import Context
    from pruneaware.core.masks import MaskSet
    from pruneaware.structured.surgery import ParameterRemap


class QuantizationAwareTraining(Stage):
    """Fake-quantized training over the last ``spec.epochs`` epochs, then ``convert()`` to int8 with the zeros checked.

    It begins once every other stage has made its last mask or shape change, so the captured graph
    keeps its shapes and the masks (still enforced after every step) stay fixed. From then on
    training batches go through ``pruner.training_module``, which holds the model's own parameters.
    """

    name = "qat"
    follows_structure = True  # it begins only after the last structure change
    revives_pruned = False

    def __init__(self, spec: QATSpec):
        self.spec = spec
        self.start: int | None = None
        self.module: torch.fx.GraphModule | None = None
        self.example_inputs: Tensor | None = None
        self.masks: MaskSet | None = None
        self._forwarded = False
        self._hook: Any = None

    def setup(self, ctx: Context) -> None:
        length = ctx.length
        if not length.steps_per_epoch or not length.total_steps:
            raise ConfigError("quantization.qat.epochs", self.spec.epochs, "a Pruner built with steps_per_epoch= and epochs=: QAT is the last epochs of the run")
        epochs = length.total_steps // length.steps_per_epoch
        if self.spec.epochs > epochs:
            raise ConfigError("quantization.qat.epochs", self.spec.epochs, f"at most train.epochs ({epochs}): QAT is the last epochs of the run")
        if ctx.sync is not None or isinstance(ctx.model, DistributedDataParallel):
            raise ConfigError("quantization.qat", "enabled", "a single-process run (--nproc 1); QAT under DistributedDataParallel is not supported")
        if not isinstance(ctx.example_inputs, Tensor):
            raise ConfigError("quantization.qat", "enabled", "example_inputs= (a batch of training inputs, one tensor) passed to the Pruner: QAT captures the model with them")
        others = [stage for stage in ctx.stages if stage is not self]
        _refuse_moving_masks(others, ctx)
        start_epoch = epochs - self.spec.epochs
        self.start = start_epoch * length.steps_per_epoch
        settled = max([0, *(stage.last_change(ctx) or 0 for stage in others)])
        if settled > self.start:
            settled_epoch = math.ceil(settled / length.steps_per_epoch)
            raise ConfigError(
                "quantization.qat.epochs",
                self.spec.epochs,
                f"at most {epochs - settled_epoch}: QAT would start at epoch {start_epoch} (step {self.start}) "
                f"but the pruning schedule changes masks until step {settled} (epoch {settled_epoch}); "
                "use fewer QAT epochs, end the schedule earlier, or train longer",
            )
        toolkit.pt2e()  # a missing torchao fails now, before any training
        inputs = ctx.example_inputs
        self.example_inputs = inputs if inputs.shape[0] >= 2 else inputs.repeat(2, *[1] * (inputs.dim() - 1))
        self.masks = ctx.masks

    @property
    def active(self) -> bool:
        """Whether QAT has begun (training then goes through ``module``)."""
        return self.module is not None

    def update(self, ctx: Context) -> None:
        if self.module is None and self.start is not None and ctx.step >= self.start:
            self._begin(ctx)

    def after_step(self, ctx: Context) -> None:
        if self.module is not None and not self._forwarded:
            raise UsageError(
                f"QAT began at step {self.start}, but this step's batch did not go through the fake-quantized module: "
                "forward through pruner.training_module from then on"
            )
        self._forwarded = False

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        if self.module is not None:  # cannot happen: QAT begins after the last removal
            raise StateError("parameters were replaced after QAT captured the model; QAT must begin after the last structure change")

    def finalize(self, ctx: Context) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def convert(self) -> Int8Model:
        """The int8 model, checked to hold exact zeros wherever the masks prune."""
        if self.module is None:
            raise StateError("QAT has not started, so there is nothing to convert; train through the QAT epochs first")
        int8 = convert_int8(self.module, self.example_inputs)
        if self.masks is not None:
            check_zeros_kept(int8, self.masks.masks)
        return int8

    def state_dict(self) -> dict[str, Any]:
        """Where QAT begins and, once it has, the fake-quantized module's state (its fake quantizers and the shared weights)."""
        if self.module is None:
            return {"start": self.start}
        return {"start": self.start, "module": copy.deepcopy(self.module.state_dict())}  # with its _metadata: observers read their version there

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        if "start" in state and state["start"] != self.start:
            raise StateError(
                f"the checkpoint's QAT begins at step {state['start']}, this run's at step {self.start}; resume with the quantization spec the run started with"
            )
        if "module" not in state:  # saved before QAT began
            return
        if self.module is None:
            self._begin(ctx)
        try:
            self.module.load_state_dict(state["module"])  # whole: torchao's fake quantizers restore their observers only alongside the rest
        except RuntimeError as error:
            raise StateError(f"the checkpoint's QAT state does not fit this model ({str(error).splitlines()[0]}); resume with the model the run started with") from None

    def _begin(self, ctx: Context) -> None:
        with torch.enable_grad():  # optimizer.step() runs its hooks without gradients; the capture must record training
            self.module = prepare_qat(ctx.module, self.example_inputs, backend=self.spec.backend)
        self._hook = self.module.register_forward_pre_hook(self._mark_forward)
        ctx.training_module = self.module

    def _mark_forward(self, *_: object) -> None:
        self._forwarded = True


def _refuse_moving_masks(stages: Sequence[Stage], ctx: Context) -> None:
    """Stages that decide masks at every step (L0, SR-STE, movement scores) never let the masks settle."""
    moving = next((stage for stage in stages if stage.last_change(ctx) is None), None)
    if moving is not None:
        raise ConfigError(
            "quantization.qat",
            "enabled",
            f"a recipe whose masks settle before QAT; in stage {moving.name!r}, {type(getattr(moving, 'regularizer', moving)).__name__} "
            "re-decides them at every step (use a 'pruning' or 'structured' schedule)",
        )
