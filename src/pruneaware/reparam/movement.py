"""Soft movement pruning (Sanh et al. 2020): a learned score per weight, kept while the score exceeds a threshold."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.errors import ConfigError
from pruneaware.regularizers import Regularizer
from pruneaware.reparam.shadow import DenseShadow

SCORE_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


class SoftMovement(Regularizer):
    """Forward sees ``W * (S > threshold)``; scores S learn ``dL/dW' * W`` straight through the mask, plus ``strength * mean(sigmoid(S))``.

    With plain gradient descent the scores accumulate ``-lr * sum_t W * dL/dW'`` (weights moving
    away from zero gain), while the penalty, added to the loss by ``pruner.penalty()``, pulls every
    score down: how many weights end below the threshold is set by ``strength``, not by a target.
    The dense weights live in a shadow, so a weight whose score climbs back returns with its value;
    pruned weights get no gradient (``dL/dW = dL/dW' * mask``).
    """

    def __init__(self, strength: float, threshold: float = 0.0, init: float = 1.0, lr: float = 0.01, optimizer: str = "adam"):
        if not strength >= 0:
            raise ConfigError("regularizer.strength", strength, "a coefficient >= 0 on the mean sigmoid of the scores, e.g. 1.0")
        if not init > threshold:
            raise ConfigError("regularizer.init", init, f"a starting score above the threshold ({threshold}), or every weight starts pruned")
        if not lr > 0:
            raise ConfigError("regularizer.lr", lr, "a positive learning rate for the scores, e.g. 0.01")
        if optimizer not in SCORE_OPTIMIZERS:
            raise ConfigError("regularizer.optimizer", optimizer, sorted(SCORE_OPTIMIZERS))
        self.strength, self.threshold, self.init, self.lr = strength, threshold, init, lr
        self.optimizer_name = optimizer

    def start(self, params: Mapping[str, nn.Parameter]) -> None:
        self.shadow = DenseShadow(params)
        self.scores = {name: torch.full_like(p, self.init, requires_grad=True) for name, p in params.items()}
        self.count = sum(p.numel() for p in params.values())
        self.optimizer = SCORE_OPTIMIZERS[self.optimizer_name](list(self.scores.values()), lr=self.lr)

    def penalty(self, params: Mapping[str, nn.Parameter]) -> Tensor:
        return self.strength * sum(torch.sigmoid(score).sum() for score in self.scores.values()) / self.count

    @torch.no_grad()
    def before_step(self, params: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]) -> None:
        for name, param in params.items():
            if param.grad is None:
                continue
            score = self.scores[name]
            straight_through = param.grad * self.shadow.dense[name]  # dL/dS through W' = W * 1(S > threshold)
            score.grad = straight_through if score.grad is None else score.grad.add_(straight_through)
        self.shadow.restore_(params)  # the optimizer steps the dense weights; the Pruner masks their gradients

    def after_step(self, params: Mapping[str, nn.Parameter], learning_rates: Mapping[str, float]) -> None:
        self.shadow.capture_(params)
        self.optimizer.step()
        self.optimizer.zero_grad()

    @torch.no_grad()
    def keep_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        kept = {name: score > self.threshold for name, score in self.scores.items()}
        if all(torch.equal(kept[name], masks[name]) for name in kept):
            return None
        return kept

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
