"""Importance criteria: how much each weight matters. Higher score = more important = kept.

A criterion scores a parameter element-wise; granularities pool those scores into N:M groups,
blocks or channels. Criteria that need training signal (Taylor, movement) observe every step's
gradients through ``observe`` and keep running state, which is part of the pruner's checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pruneaware.core.errors import UsageError
from pruneaware.core.registry import Registry

if TYPE_CHECKING:
    from pruneaware.core.calibration import Calibration


class Criterion:
    """Base criterion: stateless unless it overrides ``observe`` and the state methods."""

    needs_gradients: bool = False
    """True when ``observe`` must run every optimizer step (it reads ``param.grad``)."""

    rounds: int = 1
    """Re-scorings per mask update; above 1 the Pruner approaches the target through exponentially spaced steps."""

    def observe(self, params: Mapping[str, Tensor]) -> None:
        """Called before every optimizer step, with gradients in place."""

    def calibrate(self, model: nn.Module, params: Mapping[str, nn.Parameter], calibration: Calibration) -> None:
        """Called before each scoring: criteria that probe the model itself (SNIP, GraSP, SynFlow) measure it here."""

    def score(self, name: str, param: Tensor) -> Tensor:
        """Element-wise importance of ``param``, same shape, higher means keep."""
        raise NotImplementedError

    def after_prune(self) -> None:
        """Called once masks are recomputed, e.g. to start a new accumulation window."""

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore state saved by ``state_dict``."""


CRITERIA: Registry[Criterion] = Registry("criterion")


@CRITERIA.register("magnitude")
class Magnitude(Criterion):
    """|w| (Han et al. 2015; Zhu & Gupta 2017): small weights contribute least to the output."""

    def score(self, name: str, param: Tensor) -> Tensor:
        return param.detach().abs()


@CRITERIA.register("random")
class Random(Criterion):
    """Uniform random scores: the control every criterion should beat. Seeded and checkpointed."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def score(self, name: str, param: Tensor) -> Tensor:
        return torch.rand(param.shape, generator=self.generator).to(param.device)

    def state_dict(self) -> dict[str, object]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]


class _Accumulating(Criterion):
    """Sums a per-step statistic of (weight, gradient) into one buffer per parameter."""

    needs_gradients = True

    def __init__(self) -> None:
        self.buffers: dict[str, Tensor] = {}

    def statistic(self, param: Tensor, grad: Tensor) -> Tensor:
        raise NotImplementedError

    def observe(self, params: Mapping[str, Tensor]) -> None:
        with torch.no_grad():
            for name, param in params.items():
                if param.grad is None:
                    continue
                value = self.statistic(param, param.grad)
                if name in self.buffers:
                    self.buffers[name].add_(value)
                else:
                    self.buffers[name] = value.clone()

    def accumulated(self, name: str) -> Tensor:
        if name not in self.buffers:
            raise UsageError(
                f"criterion {type(self).__name__.lower()!r} has no gradients for {name!r} yet: "
                "it scores from training signal, so schedule the first pruning after at least one "
                "optimizer step (or use 'magnitude' to prune before training)"
            )
        return self.buffers[name]

    def state_dict(self) -> dict[str, object]:
        return {"buffers": {name: buffer.clone() for name, buffer in self.buffers.items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.buffers = {name: buffer.clone() for name, buffer in state["buffers"].items()}  # type: ignore[union-attr]


@CRITERIA.register("taylor")
class Taylor(_Accumulating):
    """First-order Taylor |w * dL/dw| (Molchanov et al. 2017), summed over the steps since the last prune.

    Summing over a window averages out single-batch noise; the window restarts after each prune.
    """

    def statistic(self, param: Tensor, grad: Tensor) -> Tensor:
        return param * grad

    def score(self, name: str, param: Tensor) -> Tensor:
        return self.accumulated(name).abs()

    def after_prune(self) -> None:
        self.buffers.clear()


@CRITERIA.register("movement")
class Movement(_Accumulating):
    """Movement score -sum_t(w * dL/dw) (Sanh et al. 2020): weights moving away from zero score high.

    The score accumulates over the whole run (it is never reset), as in the paper.
    """

    def statistic(self, param: Tensor, grad: Tensor) -> Tensor:
        return -(param * grad)

    def score(self, name: str, param: Tensor) -> Tensor:
        return self.accumulated(name)


@CRITERIA.register("fisher")
class Fisher(_Accumulating):
    """Optimal Brain Damage saliency 0.5 * F_ii * w_i^2 (LeCun et al. 1990), the Fisher diagonal F standing in for the Hessian's.

    F_ii is the mean squared mini-batch gradient over the steps since the last prune (near a
    minimum it estimates the Hessian diagonal divided by the batch size); the window restarts after each prune.
    """

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def statistic(self, param: Tensor, grad: Tensor) -> Tensor:
        return grad.square()

    def observe(self, params: Mapping[str, Tensor]) -> None:
        super().observe(params)
        self.steps += 1

    def score(self, name: str, param: Tensor) -> Tensor:
        return 0.5 * self.accumulated(name) / self.steps * param.detach().square()

    def after_prune(self) -> None:
        self.buffers.clear()
        self.steps = 0

    def state_dict(self) -> dict[str, object]:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        super().load_state_dict(state)
        self.steps = int(state["steps"])  # type: ignore[arg-type]
