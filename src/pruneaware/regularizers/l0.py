"""L0 regularization through hard-concrete gates (Louizos, Welling & Kingma 2018), one gate per weight."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError
from pruneaware.regularizers.base import Regularizer
from pruneaware.regularizers.shadow import DenseShadow

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
"""Temperature and stretch interval of the hard-concrete distribution, as in the paper."""


def sample_gates(log_alpha: Tensor, noise: Tensor) -> Tensor:
    """Hard-concrete gates for uniform ``noise`` in (0, 1): a stretched, clamped binary concrete sample."""
    logits = (noise.log() - (-noise).log1p() + log_alpha) / BETA
    return (torch.sigmoid(logits) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def expected_l0(log_alpha: Tensor) -> Tensor:
    """P(gate != 0) per gate, in closed form: sigmoid(log_alpha - beta * log(-gamma / zeta))."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def deterministic_gates(log_alpha: Tensor) -> Tensor:
    """The test-time gate min(1, max(0, sigmoid(log_alpha) * (zeta - gamma) + gamma)); exactly 0 means pruned."""
    return (torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


class L0(Regularizer):
    """``strength * sum_j P(z_j != 0)`` over hard-concrete gates z on the weights, the forward seeing ``theta * z``.

    The dense weights theta live in a shadow: before each step the gradient for ``theta * z`` is
    split into theta's (times z) and the gates' log-alphas (which an internal Adam with learning
    rate ``lr`` updates), after it a new z is sampled for the next forward. Weights whose
    deterministic gate is exactly zero become pruned; ``finalize`` folds the deterministic gates in.
    """

    def __init__(self, strength: float, droprate_init: float = 0.5, lr: float = 0.01, seed: int = 0):
        if not strength > 0:
            raise ConfigError("regularizer.strength", strength, "a positive coefficient on the expected number of nonzero weights")
        if not 0.0 < droprate_init < 1.0:
            raise ConfigError("regularizer.droprate_init", droprate_init, "the initial probability of a gate being closed, in (0, 1)")
        if not lr > 0:
            raise ConfigError("regularizer.lr", lr, "a positive learning rate for the gates, e.g. 0.01")
        self.strength = strength
        self.initial_log_alpha = math.log((1.0 - droprate_init) / droprate_init)
        self.lr = lr
        self.seed = seed

    def start(self, params: Mapping[str, nn.Parameter]) -> None:
        self.shadow = DenseShadow(params)
        self.log_alpha = {name: torch.full_like(p, self.initial_log_alpha, requires_grad=True) for name, p in params.items()}
        self.optimizer = torch.optim.Adam(list(self.log_alpha.values()), lr=self.lr)
        device = next(iter(params.values())).device
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self._resample(params)

    def penalty(self, params: Mapping[str, nn.Parameter]) -> Tensor:
        return self.strength * sum(expected_l0(log_alpha).sum() for log_alpha in self.log_alpha.values())

    def before_step(self, params: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]) -> None:
        for name, param in params.items():
            if param.grad is None:
                continue
            gates = sample_gates(self.log_alpha[name], self.noise[name])
            gates.backward(param.grad * self.shadow.dense[name])  # dL/dlog_alpha through w = theta * z
            param.grad.mul_(gates.detach())  # dL/dtheta
        self.shadow.restore_(params)

    def after_step(self, params: Mapping[str, nn.Parameter], learning_rates: Mapping[str, float]) -> None:
        self.shadow.capture_(params)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self._resample(params)

    def keep_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        with torch.no_grad():
            closed = {name: deterministic_gates(log_alpha) == 0 for name, log_alpha in self.log_alpha.items()}
        if not any(bool((closed[name] & masks[name]).any()) for name in closed):
            return None
        return {name: masks[name] & ~closed[name] for name in closed}

    @torch.no_grad()
    def finalize(self, params: Mapping[str, nn.Parameter]) -> None:
        for name, param in params.items():
            param.copy_(self.shadow.dense[name] * deterministic_gates(self.log_alpha[name]))

    @torch.no_grad()
    def _resample(self, params: Mapping[str, nn.Parameter]) -> None:
        """Draw the gates of the next forward pass and write ``theta * z`` into the weights."""
        self.noise = {}
        for name, param in params.items():
            noise = torch.rand(param.shape, generator=self.generator, device=param.device, dtype=param.dtype)
            self.noise[name] = noise.clamp_(1e-6, 1.0 - 1e-6)
            param.copy_(self.shadow.dense[name] * sample_gates(self.log_alpha[name], self.noise[name]))

    def state_dict(self) -> dict[str, object]:
        return {
            "dense": self.shadow.state_dict(),
            "log_alpha": {name: value.detach().clone().cpu() for name, value in self.log_alpha.items()},
            "noise": {name: value.clone().cpu() for name, value in self.noise.items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.shadow.load_state_dict(state["dense"])  # type: ignore[arg-type]
        with torch.no_grad():
            for name, value in state["log_alpha"].items():  # type: ignore[union-attr]
                self.log_alpha[name].copy_(value)
        self.noise = {name: value.to(self.log_alpha[name].device) for name, value in state["noise"].items()}  # type: ignore[union-attr]
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
