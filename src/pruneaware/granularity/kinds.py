"""Granularities: turn element-wise scores and a target sparsity into boolean keep-masks.

Element and block granularities rank *units* (single weights or blocks) by score and prune the
lowest until the target fraction of weights is removed, per layer or across all layers at once.
N:M keeps the N best weights in every group of M consecutive input weights.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pruneaware.granularity.allocation import erdos_renyi_densities
from pruneaware.core.errors import ConfigError
from pruneaware.schedules import check_sparsity

log = logging.getLogger(__name__)

SCOPES = ("layer", "global", "er", "erk")
"""How a target is shared among layers: the same in each, one global ranking, or Erdős–Rényi(-Kernel) densities."""


class Granularity(ABC):
    """Decides the shape of what is removed together."""

    def check(self, name: str, param: Tensor) -> None:
        """Raise ConfigError when ``param`` cannot be pruned at this granularity."""

    @abstractmethod
    def masks(self, scores: Mapping[str, Tensor], sparsity: float) -> dict[str, Tensor]:
        """Boolean keep-masks (True = keep), one per scored parameter, removing ``sparsity`` of the weights."""


def input_major(tensor: Tensor) -> Tensor:
    """View a weight as rows of input weights: Linear (out, in) as is, Conv (out, in, *k) as (out, *k, in).

    Grouping along the last dimension of this view groups consecutive input channels, the
    layout 2:4 sparse kernels expect.
    """
    return tensor.movedim(1, -1) if tensor.dim() > 2 else tensor


@dataclass(frozen=True)
class _Ranked(Granularity):
    """Shared selection for element and block granularities."""

    scope: str = "layer"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ConfigError("granularity.scope", self.scope, SCOPES)

    @abstractmethod
    def units(self, score: Tensor) -> tuple[Tensor, Tensor]:
        """Score and weight count of every unit, both 1-D."""

    @abstractmethod
    def expand(self, keep_units: Tensor, shape: torch.Size) -> Tensor:
        """Element mask of ``shape`` from a keep flag per unit."""

    def masks(self, scores: Mapping[str, Tensor], sparsity: float) -> dict[str, Tensor]:
        check_sparsity("sparsity", sparsity)
        units = {name: self.units(score) for name, score in scores.items()}
        if self.scope == "global":
            keep = _keep_lowest_pruned([u for u, _ in units.values()], [s for _, s in units.values()], sparsity, "the layers in scope")
        else:
            layer_sparsity = self._layer_sparsities(scores, sparsity)
            keep = [_keep_lowest_pruned([u], [s], layer_sparsity[name], repr(name))[0] for name, (u, s) in units.items()]
        return {name: self.expand(k, scores[name].shape) for name, k in zip(scores, keep)}

    def _layer_sparsities(self, scores: Mapping[str, Tensor], sparsity: float) -> dict[str, float]:
        """Each layer's share of the target: the target itself, or 1 - its Erdős–Rényi(-Kernel) density."""
        if self.scope == "layer":
            return dict.fromkeys(scores, sparsity)
        shapes = {name: tuple(score.shape) for name, score in scores.items()}
        densities = erdos_renyi_densities(shapes, 1.0 - sparsity, kernel=self.scope == "erk")
        return {name: 1.0 - density for name, density in densities.items()}


def _keep_lowest_pruned(unit_scores: list[Tensor], unit_sizes: list[Tensor], sparsity: float, where: str) -> list[Tensor]:
    """Prune the lowest-scoring units until ``round(sparsity * weights)`` weights are removed.

    A target that rounds to every weight of ``where`` is refused: it would leave nothing to compute with.
    """
    scores = torch.cat([s.float().flatten().cpu() for s in unit_scores])
    sizes = torch.cat([s.flatten().cpu() for s in unit_sizes])
    total = int(sizes.sum())
    to_remove = round(sparsity * total)
    if total and to_remove >= total:
        raise ConfigError(
            "sparsity", sparsity, f"a target that keeps at least one of the {total} weights of {where}; it rounds to all of them, lower it"
        )
    order = torch.sort(scores, stable=True).indices
    removed_before = torch.cumsum(sizes[order], 0) - sizes[order]
    pruned = order[(removed_before < to_remove) & (torch.cumsum(sizes[order], 0) <= to_remove)]
    removed = int(sizes[pruned].sum())
    if to_remove - removed > 0.01 * total:  # whole blocks only: one coarser than the gap left cannot be taken
        log.warning(
            "%s: %d of %d weights removed where sparsity %.4f asks %d; the blocks are coarse for it, use a smaller block shape",
            where, removed, total, sparsity, to_remove,
        )
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[pruned] = False
    return [part.to(s.device) for part, s in zip(keep.split([s.numel() for s in unit_scores]), unit_scores)]


@dataclass(frozen=True)
class Element(_Ranked):
    """Individual weights; ``scope='global'`` ranks all layers together so sparsity varies per layer."""

    def units(self, score: Tensor) -> tuple[Tensor, Tensor]:
        flat = score.flatten()
        return flat, torch.ones_like(flat, dtype=torch.long)

    def expand(self, keep_units: Tensor, shape: torch.Size) -> Tensor:
        return keep_units.reshape(shape)


@dataclass(frozen=True)
class Block(_Ranked):
    """Rectangular blocks of the (out, in * kernel) weight matrix, scored by their mean.

    Blocks at ragged edges are smaller; the count of removed *weights* still meets the target.
    """

    shape: tuple[int, int] = (1, 4)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ConfigError("granularity.shape", self.shape, "two positive block sizes, e.g. [1, 4] or [4, 4]")

    def check(self, name: str, param: Tensor) -> None:
        if self.shape[0] * self.shape[1] > param.numel():
            raise ConfigError(
                f"granularity.shape on {name!r}", list(self.shape), f"a block no larger than the layer ({param.numel()} weights, shape {tuple(param.shape)})"
            )

    def _pool(self, matrix: Tensor) -> Tensor:
        rows, cols = matrix.shape
        pad = (0, -cols % self.shape[1], 0, -rows % self.shape[0])
        return F.avg_pool2d(F.pad(matrix, pad)[None, None], self.shape, divisor_override=1)[0, 0]

    def units(self, score: Tensor) -> tuple[Tensor, Tensor]:
        matrix = score.reshape(score.shape[0], -1).float()
        sums = self._pool(matrix)
        sizes = self._pool(torch.ones_like(matrix)).round().long()
        return (sums / sizes).flatten(), sizes.flatten()

    def expand(self, keep_units: Tensor, shape: torch.Size) -> Tensor:
        rows, cols = shape[0], math.prod(shape[1:])
        grid = keep_units.reshape(math.ceil(rows / self.shape[0]), math.ceil(cols / self.shape[1]))
        full = grid.repeat_interleave(self.shape[0], 0).repeat_interleave(self.shape[1], 1)
        return full[:rows, :cols].reshape(shape)


@dataclass(frozen=True)
class NM(Granularity):
    """N:M sparsity: at most N nonzeros in every group of M consecutive input weights (2:4 for GPUs).

    Below the final N:M target the same rule applies with fewer weights removed per group
    (e.g. 3:4 on the way to 2:4), so N:M can follow a gradual schedule.
    """

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if self.m < 2:
            raise ConfigError("granularity.m", self.m, "a group size M >= 2")
        if not (1 <= self.n < self.m):
            raise ConfigError("granularity.n", self.n, f"1 <= N < M (M = {self.m}); N >= M would prune nothing")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def check(self, name: str, param: Tensor) -> None:
        if param.dim() < 2 or param.shape[1] % self.m:
            inputs = param.shape[1] if param.dim() > 1 else param.numel()
            raise ConfigError(
                f"granularity {self.n}:{self.m} on {name!r}",
                inputs,
                f"an input dimension divisible by M={self.m}; leave this layer out with "
                f"scope.exclude: ['{name.rsplit('.', 1)[0]}']",
            )

    def masks(self, scores: Mapping[str, Tensor], sparsity: float) -> dict[str, Tensor]:
        check_sparsity("sparsity", sparsity)
        if sparsity > self.sparsity + 1e-9:
            raise ConfigError("sparsity", sparsity, f"at most {self.sparsity} for {self.n}:{self.m}")
        remove = math.floor(sparsity * self.m + 1e-6)
        return {name: self._mask(score, remove) for name, score in scores.items()}

    def _mask(self, score: Tensor, remove: int) -> Tensor:
        view = input_major(score)
        groups = view.reshape(-1, self.m)
        keep = torch.ones_like(groups, dtype=torch.bool)
        if remove:
            lowest = torch.topk(groups.float(), remove, dim=1, largest=False, sorted=False).indices
            keep.scatter_(1, lowest, False)
        return keep.reshape(view.shape).movedim(-1, 1) if score.dim() > 2 else keep.reshape(score.shape)
