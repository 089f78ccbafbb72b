"""SynFlow (Tanaka et al. 2020): data-free scores from the flow of positive weights, pruned over many rounds."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pruneaware.criteria import CRITERIA
from pruneaware.criteria.probing.base import ProbingCriterion, positive_int
from pruneaware.core.calibration import Calibration


ADDITIVE = ("bias", "running_mean")
"""Parameters and buffers that shift rather than scale: a path through them does not start at the input."""


@CRITERIA.register("synflow")
class SynFlow(ProbingCriterion):
    """Score ``|w| * dR/d|w|`` with ``R = 1' prod_l |W_l| 1``: each weight's share of all input-to-output paths.

    R is the model's summed output on an all-ones input (shape from ``example_inputs``) with every
    weight and buffer replaced by its absolute value in double precision, additive terms (biases,
    BatchNorm running means) set to zero so that only paths from the input count, and the model in
    eval mode, so BatchNorm scales by fixed statistics. The model's own weights, signs, dtype and
    mode are never changed: the flow runs on copies.

    Sparsity comes from ``rounds`` re-scorings (the Pruner reaches the target through exponentially
    spaced intermediate targets), so no layer is cut off entirely. Scores are returned as
    logarithms: the ranking is the same and survives the huge range of the path products.
    """

    def __init__(self, rounds: int = 100):
        super().__init__()
        self.rounds = positive_int("rounds", rounds)

    def measure(self, model: nn.Module, params: Mapping[str, nn.Parameter], calibration: Calibration) -> dict[str, Tensor]:
        shape = calibration.input_shape("synflow")
        scoped = {id(param): name for name, param in params.items()}
        model.eval()
        values: dict[str, Tensor] = {}
        leaves: dict[str, Tensor] = {}
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
            if not tensor.is_floating_point():
                values[name] = tensor
                continue
            values[name] = tensor.detach().double().abs() * (name.rsplit(".", 1)[-1] not in ADDITIVE)
            if id(tensor) in scoped:
                leaves[scoped[id(tensor)]] = values[name].requires_grad_()
        device = next(iter(params.values())).device
        flow = functional_call(model, values, (torch.ones(shape, dtype=torch.float64, device=device),)).sum()
        grads = torch.autograd.grad(flow, [leaves[name] for name in params], allow_unused=True, materialize_grads=True)
        return {name: (leaves[name].detach() * grad).log() for name, grad in zip(params, grads)}
