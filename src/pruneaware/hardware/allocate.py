"""Per-layer widths from measured sensitivity and measured cost: a greedy search under latency, MACs and params budgets.

Each channel group (a prunable layer with everything coupled to it) is cut, on a copy of its
weights, to a few ratios of its least important channels; the loss on calibration batches says what
each width is worth. The latency table says what each width costs (and its MACs and parameters).
Starting dense, the search repeatedly narrows the group whose next fast width loses the least loss
per unit of the budgets still unmet, until every budget is met.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pruneaware.hardware.layers import TIMED
from pruneaware.hardware.predict import widths_of
from pruneaware.hardware.table import LatencyTable
from pruneaware.structured.soft import group_keep_masks

RATIOS = (0.25, 0.5, 0.75)
STEPS = (32, 16, 8)
"""Width steps ``round_to: auto`` picks from: the widest that leaves a layer at least ``MIN_CHOICES`` widths."""
MIN_CHOICES = 4


def auto_round_to(width: int) -> int:
    """The hardware-friendly width step of a group ``width`` channels wide (``round_to: auto``).

    32 from 128 channels, 16 from 64, 8 from 16 (vector and matrix units work on blocks of 8 to 32
    channels, and a width between two blocks runs as slowly as the wider one; each layer keeps at
    least ``MIN_CHOICES`` widths to choose from); below 16 channels, 1.
    """
    if width < 0:
        raise ValueError(f"a channel count >= 0, not {width}")
    fitting = [step for step in STEPS if width // step >= MIN_CHOICES]
    if fitting:
        return fitting[0]
    return STEPS[-1] if width >= 2 * STEPS[-1] else 1


@dataclass
class GroupInfo:
    """One channel group: its root, the timed layers whose outputs and inputs it cuts, and its width range."""

    group: object
    root: nn.Module
    outs: list[str]
    ins: list[str]
    width: int
    floor: int
    sensitivity: list[tuple[float, float]]
    """(fraction of channels cut, loss increase) measured, with (0, 0)."""
    step: int = 8
    """Widths are multiples of this (the group's ``round_to``)."""

    def damage(self, width: int) -> float:
        cut, loss = zip(*self.sensitivity)
        fraction = 1 - width / self.width
        if fraction <= cut[-1]:
            return float(np.interp(fraction, cut, loss))
        return loss[-1] * fraction / cut[-1]


def layer_resources(table: LatencyTable, name: str, in_width: int, out_width: int) -> tuple[float, float]:
    """(MACs per sample, parameters) of a timed layer at these widths."""
    context = table.contexts[name]
    kernel = math.prod(context.kernel) if context.kernel else 1
    inputs = 1 if context.depthwise else in_width // max(context.groups, 1)
    params = inputs * out_width * kernel
    return float(params * table.per_channel[name]), float(params)


def sensitivity(info_groups: Sequence[tuple[object, torch.Tensor]], loss: Callable[[], float]) -> list[list[tuple[float, float]]]:
    """Per group, the loss increase when its least important channels (``RATIOS`` of them) are zeroed, weights restored after."""
    base = loss()
    measured = []
    for group, importance in info_groups:
        order = torch.argsort(importance).tolist()
        points = [(0.0, 0.0)]
        for ratio in RATIOS:
            count = int(len(order) * ratio)
            if count == 0:
                continue
            masks = group_keep_masks([_subgroup(group, sorted(order[:count]))])
            saved = {param: param.detach().clone() for param in masks}
            with torch.no_grad():
                for param, keep in masks.items():
                    param.mul_(keep.to(param.dtype))
            points.append((ratio, max(loss() - base, 0.0)))
            with torch.no_grad():
                for param, value in saved.items():
                    param.copy_(value)
        measured.append(points)
    return measured


def recalibrated_loss(model: nn.Module, batches: Sequence[object], loss: Callable[[nn.Module, object], torch.Tensor]) -> float:
    """Mean loss over ``batches`` in eval mode after BatchNorm statistics are re-estimated on the same batches.

    Cutting channels shifts the activations every later normalization sees; with the dense model's
    running statistics a cut looks far worse than it is once training has adapted them. The
    statistics and train/eval flags are restored afterwards; without BatchNorm this is the plain mean loss.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            if norms:
                model.eval()
                for norm in norms:
                    norm.reset_running_stats()
                    norm.momentum = None  # a cumulative average over the batches
                    norm.train()
                for batch in batches:
                    loss(model, batch)
            model.eval()
            return float(sum(float(loss(model, batch)) for batch in batches) / max(len(batches), 1))
    finally:
        with torch.no_grad():
            for norm, momentum, mean, var, count in saved:
                norm.momentum = momentum
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
                norm.num_batches_tracked.copy_(count)
        for module, training in modes:
            module.train(training)


def _subgroup(group: object, indices: list[int]) -> object:
    dep = group[0].dep  # type: ignore[index]
    return group._DG.get_pruning_group(dep.target.module, dep.handler, indices)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Budgets:
    """Fractions of the dense model each resource must fall to (None: unconstrained); latency in milliseconds."""

    latency_ms: float | None = None
    macs: float | None = None
    params: float | None = None

    def partial(self, progress: float, dense_ms: float, fields: tuple[str, ...] = ("latency_ms", "macs", "params")) -> Budgets:
        """These budgets, those in ``fields`` moved only ``progress`` (0..1) of the way from the dense model's resources."""
        def step(field: str, dense: float) -> float | None:
            budget = getattr(self, field)
            return budget if budget is None or field not in fields else dense - progress * (dense - budget)

        return Budgets(step("latency_ms", dense_ms), step("macs", 1.0), step("params", 1.0))


def search(table: LatencyTable, model: nn.Module, groups: list[GroupInfo], budgets: Budgets) -> dict[int, int]:
    """Final width per group (by index), a multiple of its ``step``, meeting every budget, or as close as the floors allow."""
    widths = widths_of(model, table)
    dense_macs = sum(layer_resources(table, n, c.in_full, c.out_full)[0] for n, c in table.contexts.items())
    dense_params = sum(layer_resources(table, n, c.in_full, c.out_full)[1] for n, c in table.contexts.items())
    dense_out = sum(table.per_channel[n] * c.out_full for n, c in table.contexts.items())
    dense_layers = table.dense_layers_ms()
    remainder = max(table.dense_ms - dense_layers, 0.0) / max(dense_out, 1)
    scale = table.dense_ms / dense_layers if dense_layers >= table.dense_ms else 1.0

    def totals(widths: dict[str, tuple[int, int]]) -> np.ndarray:
        ms = sum(table.layer_ms(n, i, o) * scale + remainder * table.per_channel[n] * o for n, (i, o) in widths.items())
        macs = sum(layer_resources(table, n, i, o)[0] for n, (i, o) in widths.items())
        params = sum(layer_resources(table, n, i, o)[1] for n, (i, o) in widths.items())
        return np.array([ms, macs, params])

    goal = np.array([
        budgets.latency_ms if budgets.latency_ms is not None else np.inf,
        budgets.macs * dense_macs if budgets.macs is not None else np.inf,
        budgets.params * dense_params if budgets.params is not None else np.inf,
    ])
    state = {index: info.width for index, info in enumerate(groups)}
    now = totals(widths)

    def narrowed(info: GroupInfo, width: int) -> dict[str, tuple[int, int]]:
        changed = dict(widths)
        for name in info.outs:
            changed[name] = (width, width) if table.contexts[name].depthwise else (changed[name][0], width)
        for name in info.ins:
            if not table.contexts[name].depthwise:
                changed[name] = (width, changed[name][1])
        return changed

    def next_width(index: int) -> int | None:
        """The next narrower width that is faster than every wider one tried (a fast size), or None at the floor."""
        info, width = groups[index], state[index]
        base = totals(narrowed(info, width))[0]
        candidate = width - info.step if width % info.step == 0 else width - width % info.step
        while candidate >= info.floor and candidate > 0:
            if totals(narrowed(info, candidate))[0] < base:
                return candidate
            candidate -= info.step
        return None

    while np.any(now > goal):
        gap = np.where(now > goal, now - goal, 0.0)
        best, best_score = None, np.inf
        for index, info in enumerate(groups):
            width = next_width(index)
            if width is None:
                continue
            after = totals(narrowed(info, width))
            benefit = float(np.sum(np.minimum((now - after)[gap > 0] / gap[gap > 0], 1.0)))
            if benefit <= 0:
                continue
            score = (info.damage(width) - info.damage(state[index]) + 1e-12) / benefit
            if score < best_score:
                best, best_score = (index, width, after), score
        if best is None:
            break
        index, width, now = best
        widths.update(narrowed(groups[index], width))
        state[index] = width
    return state


def timed_members(group: object, names: dict[int, str], table: LatencyTable, graph: object) -> tuple[list[str], list[str]]:
    """Timed layers whose output (and input) channels the group cuts."""
    outs, ins = [], []
    for item in group:  # type: ignore[attr-defined]
        module = item.dep.target.module
        name = names.get(id(module))
        if not isinstance(module, TIMED) or name not in table.contexts:
            continue
        (outs if graph.is_out_channel_pruning_fn(item.dep.handler) else ins).append(name)  # type: ignore[attr-defined]
    return sorted(set(outs)), sorted(set(ins))
