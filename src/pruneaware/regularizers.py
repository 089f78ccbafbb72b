"""Regularizers: push weights toward zero during training, as a loss term or a proximal update."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.errors import ConfigError


class Regularizer:
    """A penalty added to the loss (``penalty``) and/or an update applied after each step (``after_step``)."""

    def penalty(self, params: Mapping[str, nn.Parameter]) -> Tensor | float:
        return 0.0

    def after_step(self, params: Mapping[str, nn.Parameter], learning_rates: Mapping[str, float]) -> None:
        """Called after every optimizer step with each parameter's current learning rate."""


class L1(Regularizer):
    """L1 sparsity: ``strength * sum|w|``, as a loss term or, with ``proximal``, as soft-thresholding.

    The proximal form ``w <- sign(w) * max(|w| - lr * strength, 0)`` after each step produces exact
    zeros, which a subgradient penalty only approaches; those zeros then count as pruned.
    """

    def __init__(self, strength: float, proximal: bool = False):
        if not strength > 0:
            raise ConfigError("regularizer.strength", strength, "a positive coefficient, e.g. 1e-5")
        self.strength = strength
        self.proximal = proximal

    def penalty(self, params: Mapping[str, nn.Parameter]) -> Tensor | float:
        if self.proximal:
            return 0.0
        return self.strength * sum(param.abs().sum() for param in params.values())

    @torch.no_grad()
    def after_step(self, params: Mapping[str, nn.Parameter], learning_rates: Mapping[str, float]) -> None:
        if not self.proximal:
            return
        for name, param in params.items():
            threshold = learning_rates[name] * self.strength
            param.copy_(param.sign() * (param.abs() - threshold).clamp_min_(0.0))
