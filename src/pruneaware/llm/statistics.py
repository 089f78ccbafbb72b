"""Per-Linear input statistics gathered by forward hooks: feature norms (Wanda) and the layer-wise Hessian (SparseGPT)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class InputStatistics:
    """Running sums over calibration tokens of one Linear's inputs x: sum x_j^2 and, when asked, sum x x^T."""

    def __init__(self, features: int, *, hessian: bool, device: torch.device | None = None):
        self.tokens = 0
        self.square_sums = torch.zeros(features, dtype=torch.float64, device=device)
        self.outer_sums = torch.zeros(features, features, dtype=torch.float32, device=device) if hessian else None

    @torch.no_grad()
    def add(self, inputs: Tensor, token_mask: Tensor | None = None) -> None:
        """Count every token row of ``inputs`` (..., features); with ``token_mask`` (batch, seq) only the real ones."""
        if token_mask is not None and inputs.dim() == 3 and tuple(token_mask.shape) == tuple(inputs.shape[:2]):
            rows = inputs[token_mask.to(inputs.device, torch.bool)]
        else:
            rows = inputs.reshape(-1, inputs.shape[-1])
        rows = rows.float()
        self.tokens += rows.shape[0]
        self.square_sums += rows.square().sum(0, dtype=torch.float64)
        if self.outer_sums is not None:
            self.outer_sums.addmm_(rows.T, rows)

    def feature_norms(self) -> Tensor:
        """||X_j||_2 over all calibration tokens, one per input feature."""
        return self.square_sums.sqrt().float()

    def hessian(self) -> Tensor:
        """H = 2 X X^T / tokens: the Hessian of the layer-wise squared reconstruction error (mean over tokens)."""
        if self.outer_sums is None:
            raise ValueError("statistics were collected without the Hessian (hessian=False)")
        return self.outer_sums * (2.0 / max(self.tokens, 1))


class StatisticsHooks:
    """Forward hooks adding each Linear's inputs to its InputStatistics; ``token_mask`` is that of the batch being run."""

    def __init__(self, modules: Mapping[str, nn.Linear], *, hessian: bool):
        self.token_mask: Tensor | None = None
        self.statistics = {
            name: InputStatistics(module.in_features, hessian=hessian, device=module.weight.device) for name, module in modules.items()
        }
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name: str):
        def record(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            self.statistics[name].add(args[0], self.token_mask)

        return record

    def __getitem__(self, name: str) -> InputStatistics:
        return self.statistics[name]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@contextmanager
def collect_statistics(modules: Mapping[str, nn.Linear], *, hessian: bool) -> Iterator[StatisticsHooks]:
    """Hooks on ``modules`` for the duration of the block; removed even when a forward pass fails."""
    hooks = StatisticsHooks(modules, hessian=hessian)
    try:
        yield hooks
    finally:
        hooks.remove()
