"""Mask updates: at each step of a schedule, score with a criterion and cut to the target at a granularity."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from pruneaware.core.context import Context
from pruneaware.core.stage import Stage
from pruneaware.criteria import Criterion
from pruneaware.core.errors import ConfigError, StateError
from pruneaware.granularity import Granularity
from pruneaware.schedules import Schedule, geometric_targets
from pruneaware.structured.surgery import ParameterRemap

log = logging.getLogger(__name__)
MaskRule = Callable[[Granularity, Mapping[str, Tensor], Mapping[str, Tensor], float], dict[str, Tensor]]


def keep_pruned(granularity: Granularity, scores: Mapping[str, Tensor], current: Mapping[str, Tensor], target: float) -> dict[str, Tensor]:
    """The default rule: pruned weights stay pruned (scored lowest), the rest cut to ``target``."""
    kept = {name: score.masked_fill(~current[name], float("-inf")) for name, score in scores.items()}
    return {name: mask & current[name] for name, mask in granularity.masks(kept, target).items()}


def follow(tensors: dict[str, Tensor], ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
    """Slice per-parameter tensors (shaped like the parameters, keyed by name) to parameters replaced by ``remaps``."""
    by_new = {id(remap.new): remap for remap in remaps if remap.new is not None}
    for name, tensor in list(tensors.items()):
        if name not in ctx.params and any(remap.new is None for remap in remaps):
            del tensors[name]  # its layer was removed
            continue
        remap = by_new.get(id(ctx.params.get(name)))
        if remap is not None and tensor.shape == remap.old.shape:
            tensors[name] = remap.slice(tensor)


class MaskUpdate(Stage):
    """Schedule x criterion x granularity: recompute the masks at every update step of ``schedule``.

    ``rule`` turns scores into masks (default: pruned weights stay pruned; splicing passes its
    hysteresis rule). A criterion with several ``rounds`` (SynFlow) reaches the target through
    exponentially spaced intermediate targets, re-scored after each.
    """

    name = "prune"
    follows_structure = True

    def __init__(self, schedule: Schedule, criterion: Criterion, granularity: Granularity, rule: MaskRule = keep_pruned, section: str = "pruning"):
        self.schedule, self.criterion, self.granularity, self.rule, self.section = schedule, criterion, granularity, rule, section
        self.revives_pruned = rule is not keep_pruned  # the default rule never brings a pruned weight back

    def setup(self, ctx: Context) -> None:
        check_fits_training(self.schedule, ctx, f"{self.section}.schedule")
        for name, param in ctx.params.items():
            self.granularity.check(name, param)

    def before_step(self, ctx: Context) -> None:
        if self.criterion.needs_gradients:
            self.criterion.observe(ctx.params)

    def update(self, ctx: Context) -> None:
        if not self.schedule.is_update_step(ctx.step):
            return
        target = self.schedule.value_at(ctx.step)
        for round_target in geometric_targets(ctx.masks.sparsity(), target, self.criterion.rounds):
            self._prune_to(ctx, round_target)
        ctx.masks_updated = True
        self.criterion.after_prune()
        log.debug("step %d: pruned to target %.4f (masked %.4f)", ctx.step, target, ctx.masks.sparsity())

    def _prune_to(self, ctx: Context, target: float) -> None:
        """Score once (after letting the criterion probe the model) and cut to ``target``."""
        self.criterion.calibrate(ctx.module, ctx.params, ctx.calibration)
        with torch.no_grad():
            scores = {name: self.criterion.score(name, param).float() for name, param in ctx.params.items()}
        check_finite(ctx.params, scores, ctx.step)
        ctx.masks.update(ctx.agreed(self.rule(self.granularity, scores, ctx.masks.masks, target)))

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """Criterion buffers are sliced like their parameters; the new shapes must still suit the granularity (e.g. N:M groups)."""
        buffers = getattr(self.criterion, "buffers", None)
        if buffers:
            follow(buffers, ctx, remaps)
        replaced = {id(remap.new) for remap in remaps}
        for name, param in ctx.params.items():
            if id(param) in replaced:
                self.granularity.check(name, param)

    def may_revive(self, ctx: Context) -> bool:
        return self.revives_pruned and ctx.step < self.schedule.last_step

    def target(self, ctx: Context) -> float | None:
        return self.schedule.target(ctx.step)

    def last_change(self, ctx: Context) -> int | None:
        return self.schedule.last_step

    def state_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        if "criterion" in state:
            self.criterion.load_state_dict(state["criterion"])


def check_fits_training(schedule: Schedule, ctx: Context, field: str) -> None:
    """A schedule must end by the last training step (when the training length is known)."""
    total = ctx.length.total_steps
    if total is not None and schedule.last_step > total:
        raise ConfigError(
            field, f"last update at step {schedule.last_step}",
            f"a schedule that ends by the last training step ({total}); move 'end'/'at' earlier or train longer",
        )


def check_finite(params: Mapping[str, Tensor], scores: Mapping[str, Tensor], step: int) -> None:
    """Non-finite weights or NaN scores would rank arbitrarily (NaN sorts as most important): stop, naming the layer.

    Infinite scores are allowed: criteria such as SynFlow's products can overflow and still rank.
    """
    for name, score in scores.items():
        bad = "weights" if not bool(torch.isfinite(params[name]).all()) else "scores" if bool(torch.isnan(score).any()) else None
        if bad is not None:
            raise StateError(
                f"layer {name!r} has non-finite (NaN or infinite) {bad} at the mask update of step {step}: training diverged, "
                "and ranking them would keep or remove weights arbitrarily; lower the learning rate or check the loss and "
                "inputs, then resume from an earlier checkpoint"
            )
