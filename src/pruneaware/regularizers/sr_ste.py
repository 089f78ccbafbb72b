"""SR-STE (Zhou et al. 2021): N:M sparse forward, dense weights trained through a sparse-refined straight-through estimator."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError
from pruneaware.granularity import NM
from pruneaware.regularizers.base import Regularizer
from pruneaware.regularizers.shadow import DenseShadow


class SRSTE(Regularizer):
    """The forward sees N:M-projected weights; every dense weight gets the gradient, plus ``decay * (1 - mask) * w``.

    Before each step the dense weights are written back and the refine term added to the
    gradients; after it the stepped dense weights are saved and re-projected, so the N:M pattern
    follows the magnitudes and pruned positions can come back.
    """

    straight_through = True

    def __init__(self, n: int = 2, m: int = 4, decay: float = 2e-4):
        if not decay >= 0:
            raise ConfigError("regularizer.decay", decay, "a coefficient >= 0 on the pruned weights, e.g. 2e-4")
        self.granularity = NM(n, m)
        self.decay = decay

    def start(self, params: Mapping[str, nn.Parameter]) -> None:
        for name, param in params.items():
            self.granularity.check(name, param)
        self.shadow = DenseShadow(params)

    @torch.no_grad()
    def before_step(self, params: Mapping[str, nn.Parameter], masks: Mapping[str, Tensor]) -> None:
        for name, param in params.items():
            if param.grad is not None and self.decay:
                param.grad.add_(self.shadow.dense[name] * ~masks[name], alpha=self.decay)
        self.shadow.restore_(params)

    def after_step(self, params: Mapping[str, nn.Parameter], learning_rates: Mapping[str, float]) -> None:
        self.shadow.capture_(params)

    def keep_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        scores = {name: dense.abs() for name, dense in self.shadow.dense.items()}
        return self.granularity.masks(scores, self.granularity.sparsity)

    def state_dict(self) -> dict[str, object]:
        return {"dense": self.shadow.state_dict()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        self.shadow.load_state_dict(state["dense"])  # type: ignore[arg-type]
