"""The context every stage sees: the model, optimizer, masks, training length, step and shared services."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pruneaware.distributed.ddp import rewrap_ddp
from pruneaware.distributed.sync import RankZeroSync
from pruneaware.core.errors import UsageError
from pruneaware.core.masks import MaskSet
from pruneaware.core.optimizer_hooks import LearningRates
from pruneaware.core.calibration import Calibration
from pruneaware.recipe.schedules import TrainingLength
from pruneaware.structured.graph import unwrap_model
from pruneaware.structured.surgery import ParameterRemap, remap_optimizer


@dataclass
class Context:
    """Shared by the driver and its stages; no stage reimplements what is here.

    Per step, ``masks_updated`` says a stage re-decided the masks at this step (the driver then does
    not enforce them again) and ``gradients_pass`` that a stage handled the gradients of pruned
    weights itself (straight-through training), so the driver does not zero them.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    masks: MaskSet
    length: TrainingLength
    calibration: Calibration
    sync: RankZeroSync | None
    example_inputs: Any = None
    step: int = 0
    masks_updated: bool = False
    gradients_pass: bool = False
    stages: Sequence[Any] = ()
    callbacks: list[Callable[[list[ParameterRemap]], None]] = field(default_factory=list)
    training_module: nn.Module | None = None
    """What training batches go through when a stage replaced the model for that (QAT's fake-quantized capture)."""
    _learning_rates: LearningRates | None = None

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """The parameters in scope, by name (the current objects, also after channel removal)."""
        return self.masks.params

    @property
    def module(self) -> nn.Module:
        """The bare model (inside a DistributedDataParallel wrapper, if any)."""
        return unwrap_model(self.model)

    def agreed(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rank 0's masks on every rank of a distributed run (ranks may score differently); as they are otherwise."""
        return self.sync.masks(masks, self.params) if self.sync is not None else dict(masks)

    def learning_rates(self, stage: str) -> dict[str, float]:
        """Each pruned parameter's current learning rate (frozen parameters have none)."""
        if self.optimizer is None:
            raise UsageError(f"stage {stage!r} needs the optimizer's learning rate; pass the optimizer to Pruner")
        if self._learning_rates is None:
            self._learning_rates = LearningRates(self.optimizer, self.params)
        return self._learning_rates.current()

    def announce_structure_change(self, remaps: list[ParameterRemap]) -> None:
        """Parameters were replaced: the optimizer, the masks, every stage, a DDP wrapper and the callbacks follow, in that order."""
        if not remaps:
            return
        if self.optimizer is not None:
            remap_optimizer(self.optimizer, remaps)
        self.masks.remap(remaps)
        for stage in self.stages:
            if not stage.changes_structure:
                stage.structure_changed(self, remaps)
        if isinstance(self.model, DistributedDataParallel):
            self.model = rewrap_ddp(self.model)
        for callback in self.callbacks:
            callback(remaps)
