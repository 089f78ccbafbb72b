"""Learned-score movement pruning (Sanh et al. 2020): soft (scores above a threshold) and top-k (the paper's hard form)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError
from pruneaware.granularity import Element
from pruneaware.regularizers.base import Regularizer
from pruneaware.regularizers.shadow import DenseShadow
from pruneaware.schedules import Schedule

SCORE_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class _LearnedScores(Regularizer):
    """A score S per weight, learned straight through the mask; the dense weights live in a shadow.

    The forward sees ``W' = W * mask(S)``. Before each step the scores get ``dL/dS = dL/dW' * W``
    (with plain gradient descent: ``-lr * sum_t W * dL/dW'``, the accumulated movement) and the dense
    weights go back into the parameters, so the optimizer steps them and the Pruner zeros the
    gradients of pruned ones. After the step the dense weights are saved and the scores step; a
    weight whose score climbs back returns with its saved value. Subclasses say how S becomes a mask.
    """

    def __init__(self, init: float, lr: float, optimizer: str):
        if not lr > 0:
            raise ConfigError("regularizer.lr", lr, "a positive learning rate for the scores, e.g. 0.01")
        if optimizer not in SCORE_OPTIMIZERS:
            raise ConfigError("regularizer.optimizer", optimizer, sorted(SCORE_OPTIMIZERS))
        self.init, self.lr, self.optimizer_name = init, lr, optimizer

    def start(self, params: Mapping[str, nn.Parameter]) -> None:
        self.shadow = DenseShadow(params)
        self.scores = {name: torch.full_like(p, self.init, requires_grad=True) for name, p in params.items()}
        self.count = sum(p.numel() for p in params.values())
        self.optimizer = SCORE_OPTIMIZERS[self.optimizer_name](list(self.scores.values()), lr=self.lr)

    @torch.no_grad()
    def before_step(self, params: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]) -> None:
        for name, param in params.items():
            if param.grad is None:
                continue
            score = self.scores[name]
            straight_through = param.grad * self.shadow.dense[name]  # dL/dS through W' = W * mask(S)
            score.grad = straight_through if score.grad is None else score.grad.add_(straight_through)
        self.shadow.restore_(params)  # the optimizer steps the dense weights; the Pruner masks their gradients

    def after_step(self, params: Mapping[str, nn.Parameter], learning_rates: Mapping[str, float]) -> None:
        self.shadow.capture_(params)
        self.optimizer.step()
        self.optimizer.zero_grad()

    def _changed(self, kept: dict[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """``kept``, or None when it equals the masks in force."""
        return None if all(torch.equal(kept[name], masks[name]) for name in kept) else kept

    def state_dict(self) -> dict[str, object]:
        return {
            "dense": self.shadow.state_dict(),
            "scores": {name: score.detach().clone().cpu() for name, score in self.scores.items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.shadow.load_state_dict(state["dense"])  # type: ignore[arg-type]
        with torch.no_grad():
            for name, value in state["scores"].items():  # type: ignore[union-attr]
                self.scores[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]


class SoftMovement(_LearnedScores):
    """Soft movement: a weight is kept while ``S > threshold``; ``strength * mean(sigmoid(S))`` pulls every score down.

    The penalty, added to the loss by ``pruner.penalty()``, is the paper's ``lambda * sum sigmoid(S)``
    divided by the number of scored weights: how many weights end below the threshold is set by
    ``strength``, not by a target.
    """

    def __init__(self, strength: float, threshold: float = 0.0, init: float = 1.0, lr: float = 0.01, optimizer: str = "adam"):
        if not strength >= 0:
            raise ConfigError("regularizer.strength", strength, "a coefficient >= 0 on the mean sigmoid of the scores, e.g. 1.0")
        if not init > threshold:
            raise ConfigError("regularizer.init", init, f"a starting score above the threshold ({threshold}), or every weight starts pruned")
        super().__init__(init, lr, optimizer)
        self.strength, self.threshold = strength, threshold

    def penalty(self, params: Mapping[str, nn.Parameter]) -> Tensor:
        return self.strength * sum(torch.sigmoid(score).sum() for score in self.scores.values()) / self.count

    @torch.no_grad()
    def keep_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        return self._changed({name: score > self.threshold for name, score in self.scores.items()}, masks)


class TopKMovement(_LearnedScores):
    """The paper's hard movement: after every step the mask is the top-k of the learned scores, k following ``schedule``.

    Unlike the accumulated ``movement`` criterion, every weight's score keeps learning while it is
    pruned (the straight-through gradient uses its saved dense value), and the top-k is taken over
    all weights, so a weight removed early returns when its score overtakes a kept one.
    ``allocation`` is the element granularity's scope: ``layer`` (the paper's per-matrix top-k),
    ``global``, ``erk`` or ``er``.
    """

    def __init__(self, schedule: Schedule, allocation: str = "layer", init: float = 0.0, lr: float = 0.01, optimizer: str = "adam"):
        super().__init__(init, lr, optimizer)
        self.schedule, self.granularity = schedule, Element(scope=allocation)
        self.steps = 0

    def after_step(self, params: Mapping[str, nn.Parameter], learning_rates: Mapping[str, float]) -> None:
        super().after_step(params, learning_rates)
        self.steps += 1

    def target(self) -> float:
        return self.schedule.target(self.steps)

    @torch.no_grad()
    def keep_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        sparsity = self.schedule.target(self.steps)
        if sparsity == 0.0:
            return self._changed({name: torch.ones_like(score, dtype=torch.bool) for name, score in self.scores.items()}, masks)
        return self._changed(self.granularity.masks(self.scores, sparsity), masks)

    def state_dict(self) -> dict[str, object]:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        super().load_state_dict(state)
        self.steps = int(state["steps"])  # type: ignore[call-overload]
