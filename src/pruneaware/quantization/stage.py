"""QAT as the last epochs of a pruned training run: when it may start, the module it trains, its checkpoint state."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, StateError
from pruneaware.core.driver import Pruner
from pruneaware.quantization import toolkit
from pruneaware.quantization.convert import Int8Model, convert_int8
from pruneaware.quantization.prepare import prepare_qat
from pruneaware.quantization.spec import QATSpec
from pruneaware.quantization.zeros import check_zeros_kept


def last_mask_change(pruner: Pruner | None) -> int:
    """The optimizer step after which the pruner changes no mask and no shape any more (0 without a pruner)."""
    if pruner is None:
        return 0
    return pruner.last_change_step() or 0


class QATStage:
    """Quantization-aware training over the last ``spec.epochs`` epochs of a run, then conversion to int8.

    It starts only once the pruner has made its last mask or channel change, so the captured graph
    keeps its shapes and the masks (still enforced by the pruner's optimizer hooks) stay fixed.
    """

    def __init__(
        self,
        spec: QATSpec,
        model: nn.Module,
        pruner: Pruner | None,
        example_inputs: Tensor,
        *,
        steps_per_epoch: int,
        epochs: int,
        distributed: bool = False,
    ):
        if spec.epochs > epochs:
            raise ConfigError("quantization.qat.epochs", spec.epochs, f"at most train.epochs ({epochs}): QAT is the last epochs of the run")
        if distributed:
            raise ConfigError("quantization.qat", "enabled", "a single-process run (--nproc 1); QAT under DistributedDataParallel is not supported")
        _refuse_moving_masks(pruner)
        self.spec = spec
        self.model = model
        self.pruner = pruner
        self.example_inputs = example_inputs if example_inputs.shape[0] >= 2 else example_inputs.repeat(2, *[1] * (example_inputs.dim() - 1))
        self.start_epoch = epochs - spec.epochs
        settled = last_mask_change(pruner)
        if settled > self.start_epoch * steps_per_epoch:
            settled_epoch = math.ceil(settled / steps_per_epoch)
            raise ConfigError(
                "quantization.qat.epochs",
                spec.epochs,
                f"at most {epochs - settled_epoch}: QAT would start at epoch {self.start_epoch} (step {self.start_epoch * steps_per_epoch}) "
                f"but the pruning schedule changes masks until step {settled} (epoch {settled_epoch}); "
                "use fewer QAT epochs, end the schedule earlier, or train longer",
            )
        toolkit.pt2e()  # a missing torchao fails now, before any training
        self.module: torch.fx.GraphModule | None = None

    @property
    def active(self) -> bool:
        return self.module is not None

    def begin_if_due(self, epoch: int) -> None:
        """At the first QAT epoch, capture the model with fake quantization; it then trains in the model's place."""
        if epoch >= self.start_epoch and self.module is None:
            self.module = prepare_qat(self.model, self.example_inputs, backend=self.spec.backend)

    def training_module(self) -> nn.Module:
        """What training batches go through: the fake-quantized module once QAT has begun, else the model."""
        return self.module if self.module is not None else self.model

    def convert(self) -> Int8Model:
        """The int8 model, checked to hold exact zeros wherever the pruner's masks prune."""
        if self.module is None:
            raise StateError("QAT has not started, so there is nothing to convert; train through the QAT epochs first")
        int8 = convert_int8(self.module, self.example_inputs)
        if self.pruner is not None:
            check_zeros_kept(int8, self.pruner.masks.masks)
        return int8

    def state_dict(self) -> dict[str, Any] | None:
        """The fake quantizers' state (and the shared weights), or None before QAT begins."""
        return None if self.module is None else {"module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None, epoch: int) -> None:
        """Continue at ``epoch`` from a checkpoint: capture the model again and restore its fake quantizers."""
        if state is None:
            if epoch > self.start_epoch:
                raise StateError(f"the checkpoint at epoch {epoch} holds no QAT state, but QAT starts at epoch {self.start_epoch}; resume with the spec the run started with")
            return
        self.begin_if_due(self.start_epoch)
        self.module.load_state_dict(state["module"])


def _refuse_moving_masks(pruner: Pruner | None) -> None:
    """Stages that decide masks at every step (L0, SR-STE, movement scores) never let the masks settle."""
    if pruner is not None and pruner.last_change_step() is None:
        moving = next(stage for stage in pruner.stages if stage.last_change(pruner.ctx) is None)
        raise ConfigError(
            "quantization.qat",
            "enabled",
            f"a recipe whose masks settle before QAT; in stage {moving.name!r}, {type(getattr(moving, 'regularizer', moving)).__name__} "
            "re-decides them at every step "
            "(use a 'pruning' or 'structured' schedule)",
        )
