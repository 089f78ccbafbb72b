"""Optimal Brain Damage (LeCun et al. 1990) with the Hessian diagonal estimated on calibration batches."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.criteria import CRITERIA
from pruneaware.criteria.probing.base import ProbingCriterion, positive_int
from pruneaware.core.calibration import Calibration
from pruneaware.criteria.probing.gradients import hessian_vector_products


@CRITERIA.register("obd")
class OBD(ProbingCriterion):
    """Saliency ``0.5 * H_ii * w_i^2``, H_ii by Hutchinson's estimator mean(v * Hv) over Rademacher vectors v.

    The diagonal is exact when H is diagonal (v_i^2 = 1); otherwise ``samples`` vectors average out
    the off-diagonal terms. H is that of the mean loss over ``batches`` batches. Seeded and checkpointed.
    """

    def __init__(self, batches: int = 1, samples: int = 1, seed: int = 0):
        super().__init__()
        self.batches = positive_int("batches", batches)
        self.samples = positive_int("samples", samples)
        self.generator = torch.Generator().manual_seed(seed)

    def measure(self, model: nn.Module, params: Mapping[str, nn.Parameter], calibration: Calibration) -> dict[str, Tensor]:
        batches = calibration.batches("obd", self.batches)
        weights = list(params.values())
        diagonal = [torch.zeros_like(weight) for weight in weights]
        for _ in range(self.samples):
            vectors = [self._rademacher(weight) for weight in weights]
            products = hessian_vector_products(model, weights, calibration, batches, vectors)
            for total, vector, product in zip(diagonal, vectors, products):
                total.add_(vector * product)
        scale = 0.5 / (self.samples * len(batches))
        return {name: scale * total * param.detach().square() for (name, param), total in zip(params.items(), diagonal)}

    def _rademacher(self, like: Tensor) -> Tensor:
        signs = torch.randint(0, 2, like.shape, generator=self.generator).to(device=like.device, dtype=like.dtype)
        return 2 * signs - 1

    def state_dict(self) -> dict[str, object]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
