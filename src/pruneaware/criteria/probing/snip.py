"""SNIP (Lee et al. 2019): connection sensitivity |w * dL/dw| on calibration batches, before training."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from pruneaware.criteria import CRITERIA
from pruneaware.criteria.probing.base import ProbingCriterion, positive_int
from pruneaware.core.calibration import Calibration
from pruneaware.criteria.probing.gradients import summed_gradients


@CRITERIA.register("snip")
class SNIP(ProbingCriterion):
    """|w * sum_b dL_b/dw| over ``batches`` calibration batches: the loss change from removing each weight, to first order."""

    def __init__(self, batches: int = 1):
        super().__init__()
        self.batches = positive_int("batches", batches)

    def measure(self, model: nn.Module, params: Mapping[str, nn.Parameter], calibration: Calibration) -> dict[str, Tensor]:
        batches = calibration.batches("snip", self.batches)
        grads = summed_gradients(model, list(params.values()), calibration, batches)
        return {name: (param.detach() * grad).abs() for (name, param), grad in zip(params.items(), grads)}
