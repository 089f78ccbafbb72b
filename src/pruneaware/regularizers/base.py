"""Regularizers: push weights toward zero during training, as a loss term or a proximal update."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError


class Regularizer:
    """A penalty added to the loss (``penalty``) and/or updates around each optimizer step.

    Regularizers that reparametrize the weights (L0 gates, SR-STE) also prepare the weights
    before the first forward (``start``), map gradients before the step (``before_step``), decide
    masks after it (``keep_masks``), fold themselves into the weights (``finalize``) and carry state.
    """

    straight_through: bool = False
    """True when pruned weights keep their gradients, because the optimizer updates dense weights."""
    follows_structure: bool = False
    """True when it keeps no per-weight state, so channel removal during training leaves it valid."""

    @property
    def decides_masks(self) -> bool:
        """Whether it re-decides the masks at every step (they never settle, e.g. for QAT)."""
        return type(self).keep_masks is not Regularizer.keep_masks or self.straight_through

    def target(self) -> float | None:
        """The sparsity it aims for now, when it follows a schedule (None otherwise)."""
        return None

    def start(self, params: Mapping[str, nn.Parameter]) -> None:
        """Called once when the Pruner is built, before the first forward pass."""

    def penalty(self, params: Mapping[str, nn.Parameter]) -> Tensor | float:
        return 0.0

    def before_step(self, params: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]) -> None:
        """Called before every optimizer step, with gradients in place and ``masks`` the current keep-masks."""

    def after_step(self, params: Mapping[str, nn.Parameter], learning_rates: Mapping[str, float]) -> None:
        """Called after every optimizer step with each parameter's current learning rate."""

    def keep_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """Keep-masks this regularizer decides from the current ones, or None to leave them; asked after every step."""
        return None

    def finalize(self, params: Mapping[str, nn.Parameter]) -> None:
        """Make the regularizer's effect permanent in the weights (``Pruner.finalize``)."""

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore state saved by ``state_dict``."""


class L1(Regularizer):
    """L1 sparsity: ``strength * sum|w|``, as a loss term or, with ``proximal``, as soft-thresholding.

    The proximal form ``w <- sign(w) * max(|w| - lr * strength, 0)`` after each step produces exact
    zeros, which a subgradient penalty only approaches; those zeros then count as pruned.
    """

    follows_structure = True

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
