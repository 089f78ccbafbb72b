"""Splicing (dynamic network surgery, Guo et al. 2016): pruned weights go on training and come back when they matter.

The masks keep a dense shadow of the pruned weights (``MaskSet.keep_shadows``) that the optimizer
updates with the straight-through gradient; this rule decides, at each mask update, which weights
are cut and which are spliced back, with hysteresis so that weights near the threshold do not
flip at every update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from pruneaware.core.errors import ConfigError
from pruneaware.granularity import Granularity


@dataclass(frozen=True)
class Splice:
    """Hysteresis: kept weights are scored ``(1 + band)`` times, pruned ones ``(1 - band)`` times, then cut to the target.

    With ``t`` the resulting threshold, a kept weight is cut below ``a = t / (1 + band)`` and a
    pruned one spliced back above ``b = t / (1 - band)``: ``band = 0.1`` gives the paper's
    ``a = 0.9 x, b = 1.1 x`` thresholds, while the count removed still meets the target exactly.
    """

    band: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.band < 1.0:
            raise ConfigError("pruning.splice.band", self.band, "a fraction in [0, 1), e.g. 0.1")

    def masks(self, granularity: Granularity, scores: Mapping[str, Tensor], current: Mapping[str, Tensor], target: float) -> dict[str, Tensor]:
        """New keep-masks at ``target`` from the dense weights' scores, biased towards each weight's current state."""
        biased = {name: score + self.band * score.abs() * torch.where(current[name], 1.0, -1.0) for name, score in scores.items()}
        return granularity.masks(biased, target)
