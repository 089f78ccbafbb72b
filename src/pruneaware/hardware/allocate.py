"""Per-layer widths from measured sensitivity and measured cost: a greedy search under latency, MACs and params budgets.

Each channel group (a prunable layer with everything coupled to it) is cut, on a copy of its
weights, to a few ratios of its least important channels; the loss on calibration batches says what
each width is worth. The latency table says what each width costs (and its MACs and parameters).
Starting dense, the search repeatedly narrows the group whose next fast width loses the least loss
per unit of the budgets still unmet, until every budget is met; then it widens back, while every budget
still holds, the groups whose next fast width saves the most loss per unit of budget (the last
narrowings are coarse steps and overshoot).
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
    """Mean loss over ``batches`` in eval mode, except that BatchNorm normalizes each batch by its own statistics.

    Cutting channels shifts the activations every later normalization sees; with the dense model's
    running statistics a cut looks far worse than it is once training has adapted them. A calibration
    batch's own statistics are what re-estimating them converges to, at one forward per batch.
    Running statistics and train/eval flags are restored afterwards; without BatchNorm this is the plain mean loss.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms if m.track_running_stats and m.running_mean is not None]
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()
            for norm in norms:
                norm.train()
            return float(sum(float(loss(model, batch)) for batch in batches) / max(len(batches), 1))
    finally:
        with torch.no_grad():
            for norm, mean, var, count in saved:
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
    remainder, scale = table.rest_per_output_ms(), table.layer_scale()

    def resources(name: str, in_width: int, out_width: int) -> np.ndarray:
        """(predicted ms, MACs, params) of one layer at these widths, its share of the rest of the model included."""
        macs, params = layer_resources(table, name, in_width, out_width)
        ms = table.layer_ms(name, in_width, out_width) * scale + remainder * table.per_channel[name] * out_width
        return np.array([ms, macs, params])

    goal = np.array([
        budgets.latency_ms if budgets.latency_ms is not None else np.inf,
        budgets.macs * dense_macs if budgets.macs is not None else np.inf,
        budgets.params * dense_params if budgets.params is not None else np.inf,
    ])
    state = {index: info.width for index, info in enumerate(groups)}
    per_layer = {name: resources(name, i, o) for name, (i, o) in widths.items()}
    now = sum(per_layer.values(), np.zeros(3)) + np.array([table.rest_fixed_ms, 0.0, 0.0])  # the fixed rest: in every total

    def narrowed(info: GroupInfo, width: int) -> dict[str, tuple[int, int]]:
        """The widths of the layers the group touches once it is ``width`` channels wide."""
        changed = {name: widths[name] for name in (*info.outs, *info.ins)}
        for name in info.outs:
            changed[name] = (width, width) if table.contexts[name].depthwise else (changed[name][0], width)
        for name in info.ins:
            if not table.contexts[name].depthwise:
                changed[name] = (width, changed[name][1])
        return changed

    def totals_after(info: GroupInfo, width: int) -> np.ndarray:
        """The model's resources with the group at ``width`` (only the layers it touches recomputed)."""
        return now + sum((resources(name, *w) - per_layer[name] for name, w in narrowed(info, width).items()), np.zeros(3))

    def next_width(index: int) -> int | None:
        """The next narrower width that is faster than every wider one tried (a fast size), or None at the floor."""
        info, width = groups[index], state[index]
        base = totals_after(info, width)[0]
        candidate = width - info.step if width % info.step == 0 else width - width % info.step
        while candidate >= info.floor and candidate > 0:
            if totals_after(info, candidate)[0] < base:
                return candidate
            candidate -= info.step
        return None

    def take(index: int, width: int) -> None:
        """Set the group's width (``now`` is updated by the caller from the candidate's totals)."""
        for name, w in narrowed(groups[index], width).items():
            widths[name], per_layer[name] = w, resources(name, *w)
        state[index] = width

    while np.any(now > goal):
        gap = np.where(now > goal, now - goal, 0.0)
        best, best_score = None, np.inf
        for index, info in enumerate(groups):
            width = next_width(index)
            if width is None:
                continue
            after = totals_after(info, width)
            benefit = float(np.sum(np.minimum((now - after)[gap > 0] / gap[gap > 0], 1.0)))
            if benefit <= 0:
                continue
            score = (info.damage(width) - info.damage(state[index]) + 1e-12) / benefit
            if score < best_score:
                best, best_score = (index, width, after), score
        if best is None:
            break
        index, width, now = best
        take(index, width)

    def wider(index: int) -> tuple[int, np.ndarray] | None:
        """The next wider fast width within every budget (the widest one no slower than the next step), or None."""
        info, width = groups[index], state[index]
        if width >= info.width:
            return None
        steps = list(range(width - width % info.step + info.step, info.width, info.step)) + [info.width]
        first = totals_after(info, steps[0])
        choice = max((w for w in steps if totals_after(info, w)[0] <= first[0]), default=steps[0])
        after = totals_after(info, choice)
        return (choice, after) if np.all(after <= goal) else None

    scale_of = np.where(np.isfinite(goal), goal, 1.0)
    while np.all(now <= goal):  # give back what the last coarse steps overshot: widen where it saves most damage per cost
        best, best_score = None, -np.inf
        for index, info in enumerate(groups):
            found = wider(index)
            if found is None:
                continue
            width, after = found
            cost = max(float(np.sum(((after - now) / scale_of)[np.isfinite(goal)])), 0.0) + 1e-12
            score = (info.damage(state[index]) - info.damage(width) + 1e-12) / cost
            if score > best_score:
                best, best_score = (index, width, after), score
        if best is None:
            break
        index, width, now = best
        take(index, width)
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
