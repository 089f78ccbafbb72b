"""Structured regularizers: penalties on coupled channel groups that prepare channels for removal.

Added to the loss by ``Pruner.penalty()`` while the structured schedule ramps. Each works on the
groups of the dependency graph, so a channel's penalty covers every slice that goes with it (its
filter, its norm's scale and shift, the next layers' input columns). Channel removal replaces the
parameters, so the groups are rebuilt whenever one they refer to has been replaced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError
from pruneaware.structured.slicing import ChannelLayout

if TYPE_CHECKING:
    from pruneaware.structured.channels import ChannelPruner

REGULARIZER_TYPES = ("group_lasso", "bn_scale", "growing")


def safe_norm(squares: Tensor) -> Tensor:
    """Square root whose gradient at 0 is 0 (a subgradient), not the NaN of ``sqrt`` (0 * inf)."""
    positive = squares > 0
    return torch.where(positive, torch.where(positive, squares, torch.ones_like(squares)).sqrt(), torch.zeros_like(squares))


def adaptive_weights(norms: Tensor, group_ids: Tensor, groups: int, alpha: float) -> Tensor:
    """``alpha ** ((max - n) / (max - min))`` per channel, max and min taken within its group.

    The weakest channel of a group is pushed ``alpha`` times harder than the strongest; equal norms
    (one channel, all zero, all the same) give weight 1 instead of 0 / 0 = NaN.
    """
    empty = torch.zeros(groups, device=norms.device, dtype=norms.dtype)
    high = empty.scatter_reduce(0, group_ids, norms, "amax", include_self=False)[group_ids]
    low = empty.scatter_reduce(0, group_ids, norms, "amin", include_self=False)[group_ids]
    spread = high - low
    relative = (high - norms) / spread.clamp_min(torch.finfo(norms.dtype).tiny)
    return torch.where(spread > 0, alpha**relative, torch.ones_like(norms))


class ChannelRegularizer:
    """A penalty on the channel groups a ChannelPruner may remove."""

    def __init__(self, channels: ChannelPruner, strength: float):
        if not strength > 0:
            raise ConfigError("structured.regularizer.strength", strength, "a positive coefficient, e.g. 1e-4")
        self.channels = channels
        self.strength = strength
        self._layout: ChannelLayout | None = None

    def layout(self) -> ChannelLayout:
        """Every prunable group's channels, rebuilt when a removal has replaced any parameter they refer to."""
        if self._layout is None or self._layout.is_stale():
            ranker = self.channels.ranker
            groups = ranker.DG.get_all_groups(ignored_layers=ranker.ignored_layers, root_module_types=ranker.root_module_types)
            self._layout = ChannelLayout(groups)
        return self._layout

    def norms(self) -> list[Tensor]:
        """Per group, each channel's L2 norm over its coupled slices (detached; for monitoring)."""
        layout = self.layout()
        with torch.no_grad():
            return list(safe_norm(layout.sums(torch.square)).split(layout.sizes))

    def penalty(self, step: int) -> Tensor | float:
        """The term to add to the loss at training step ``step``."""
        raise NotImplementedError


class GroupLasso(ChannelRegularizer):
    """``strength * sum over channels of ||coupled slices||_2`` (group lasso; Wen et al. 2016).

    The norm of a whole channel, not of single weights, is penalised, so channels shrink together
    and the weakest reach zero as a unit. ``alpha > 1`` scales each channel's penalty between 1
    (strongest in its group) and ``alpha`` (weakest), as in DepGraph (Fang et al. 2023).
    """

    def __init__(self, channels: ChannelPruner, strength: float, alpha: float = 1.0):
        super().__init__(channels, strength)
        if not alpha >= 1:
            raise ConfigError("structured.regularizer.alpha", alpha, "a number >= 1 (1: the same strength for every channel)")
        self.alpha = alpha

    def penalty(self, step: int) -> Tensor | float:
        layout = self.layout()
        norms = safe_norm(layout.sums(torch.square))
        if self.alpha != 1 and layout.channels:
            norms = norms * adaptive_weights(norms.detach(), layout.group_ids(), len(layout.sizes), self.alpha)
        return self.strength * norms.sum()


class BNScale(ChannelRegularizer):
    """``strength * sum |gamma|`` over the BatchNorm scales of prunable channels (network slimming; Liu et al. 2017)."""

    def batchnorms(self) -> list[nn.Module]:
        """The affine BatchNorm layers in prunable groups, each once."""
        found: dict[int, nn.Module] = {}
        for piece in self.layout().slices:
            if isinstance(piece.module, nn.modules.batchnorm._BatchNorm) and piece.name == "weight":
                found.setdefault(id(piece.module), piece.module)
        return list(found.values())

    def penalty(self, step: int) -> Tensor | float:
        total: Tensor | float = 0.0
        for module in self.batchnorms():
            total = total + module.weight.abs().sum()
        return self.strength * total


class Growing(ChannelRegularizer):
    """``strength * growth(step) * sum ||w_c||^2`` over the channels the next update would remove.

    The channels are those the pruner's own ranking selects (its importance, allocation and layer
    caps), ranked once per interval between updates (``ChannelPruner.preview``); the penalty keeps
    them at the bottom of the ranking. ``growth`` rises linearly from the last update to 1 at the
    step before the next, so the channels about to go are pushed toward zero ever harder first
    (growing regularization; Wang et al. 2021). After the last update it is 0.
    """

    def __init__(self, channels: ChannelPruner, strength: float):
        super().__init__(channels, strength)
        self._targets: tuple[list[Any], ChannelLayout] | None = None

    def growth(self, step: int) -> float:
        """Fraction of ``strength`` applied at ``step``."""
        updates = self.channels.schedule.update_steps()
        upcoming = [update for update in updates if update > step]
        if not upcoming:
            return 0.0
        previous = max((update for update in updates if update <= step), default=0)
        return (step + 1 - previous) / (upcoming[0] - previous)

    def targets(self, step: int) -> ChannelLayout:
        """The channels the next update after ``step`` would remove (empty when none are ranked)."""
        groups = self.channels.preview(step)
        if self._targets is None or self._targets[0] is not groups:
            self._targets = (groups, ChannelLayout(groups))
        return self._targets[1]

    def penalty(self, step: int) -> Tensor | float:
        growth = self.growth(step)
        targets = self.targets(step) if growth > 0 else None
        if targets is None or not targets.channels:
            return 0.0
        return self.strength * growth * targets.sums(torch.square).sum()


def build_channel_regularizer(kind: str, channels: ChannelPruner, strength: float, alpha: float = 1.0) -> ChannelRegularizer:
    """The regularizer named ``kind`` (one of REGULARIZER_TYPES) over ``channels``' groups."""
    if kind == "group_lasso":
        return GroupLasso(channels, strength, alpha)
    if kind == "bn_scale":
        return BNScale(channels, strength)
    if kind == "growing":
        return Growing(channels, strength)
    raise ConfigError("structured.regularizer.type", kind, REGULARIZER_TYPES)
