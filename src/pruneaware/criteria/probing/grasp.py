"""GraSP (Wang et al. 2020): keep the weights whose removal would most reduce gradient flow."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from pruneaware.criteria import CRITERIA
from pruneaware.criteria.probing.base import ProbingCriterion, positive_int
from pruneaware.core.calibration import Calibration
from pruneaware.criteria.probing.gradients import hessian_vector_products, summed_gradients


@CRITERIA.register("grasp")
class GraSP(ProbingCriterion):
    """Score ``w * Hg`` (the paper removes the largest ``-w * Hg``), g and Hg summed over ``batches`` batches.

    Hg is the Hessian-gradient product by double backprop over the parameters in scope; a weight
    with a very negative score is one whose removal increases the gradient norm the least.
    """

    def __init__(self, batches: int = 1):
        super().__init__()
        self.batches = positive_int("batches", batches)

    def measure(self, model: nn.Module, params: Mapping[str, nn.Parameter], calibration: Calibration) -> dict[str, Tensor]:
        batches = calibration.batches("grasp", self.batches)
        weights = list(params.values())
        gradient = summed_gradients(model, weights, calibration, batches)
        products = hessian_vector_products(model, weights, calibration, batches, gradient)
        return {name: param.detach() * product for (name, param), product in zip(params.items(), products)}
