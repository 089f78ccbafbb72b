"""Channel removal whose per-layer widths come from measured sensitivity and the latency table (``latency_allocation``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from pruneaware.core.context import Context
from pruneaware.core.registry import register_stage
from pruneaware.core.stage import Stage
from pruneaware.core.errors import ConfigError
from pruneaware.hardware.allocate import Budgets, GroupInfo, STEPS, auto_round_to, recalibrated_loss, search, sensitivity, timed_members
from pruneaware.hardware.build import latency_table
from pruneaware.hardware.table import LatencyTable
from pruneaware.structured.graph import editing
from pruneaware.structured.surgery import ParameterRemap

log = logging.getLogger(__name__)


@register_stage("latency_allocation")
class LatencyAllocation(Stage):
    """Decides how many channels each group keeps (the channel stage still picks which, by its importance).

    At each update of the structured schedule it measures every group's sensitivity on calibration
    batches (BatchNorm statistics re-estimated for each cut unless ``recalibrate: false``), searches
    widths (multiples of ``round_to`` that the table shows to be faster than every wider one; ``auto``,
    the default, gives each group a step from its width: 32 from 128 channels, 16 from 64, 8 from 16)
    meeting the latency, MACs and params budgets, and removes the schedule's share of the way there.
    Budgets: the structured target's, approached along the schedule, plus ``macs``/``params``/``latency``
    fractions of the dense model given here, held from the first removal on (``latency`` lets a MACs or params target
    also hold the predicted latency down: the target says how much goes, the extra budgets where it goes first).
    """

    name = "latency_allocation"
    follows_structure = True
    revives_pruned = False

    def __init__(self, macs: float | None = None, params: float | None = None, batches: int = 2, round_to: int | str = "auto",
                 backend: str = "torch", batch: int = 1, threads: int | None = None, latency: float | None = None,
                 recalibrate: bool = True):
        for field, value in (("macs", macs), ("params", params), ("latency", latency)):
            if value is not None and not 0 < value < 1:
                raise ConfigError(f"stages.latency_allocation.{field}", value, "a fraction of the dense model between 0 and 1")
        if round_to != "auto" and not (isinstance(round_to, int) and not isinstance(round_to, bool) and round_to >= 1):
            raise ConfigError("stages.latency_allocation.round_to", round_to, "an integer >= 1, or 'auto' (a step per layer from its width)")
        self.macs, self.params, self.latency, self.batches, self.round_to = macs, params, latency, batches, round_to
        if not isinstance(recalibrate, bool):
            raise ConfigError("stages.latency_allocation.recalibrate", recalibrate, "true or false")
        self.recalibrate = recalibrate
        self.options = {"backend": backend, "batch": batch, "threads": threads}
        self.table: LatencyTable | None = None
        self._plan: tuple[int, list[GroupInfo]] | None = None

    def setup(self, ctx: Context) -> None:
        from pruneaware.stages.channels import ChannelRemoval

        removal = next((stage for stage in ctx.stages if isinstance(stage, ChannelRemoval)), None)
        if removal is None:
            raise ConfigError("stages.latency_allocation", "without channel removal", "a recipe with a structured section whose widths it chooses")
        self.channels, self.ctx = removal.channels, ctx
        target = self.channels.target
        self.table = getattr(target, "table", None) or latency_table(ctx.module, ctx.example_inputs, round_to=self._table_step(), **self.options)
        kind = getattr(target, "kind", None)
        budgets_ms = [target.budget_ms(self.channels._dense_resource)] if kind == "latency" else []
        budgets_ms += [self.latency * self.table.dense_ms] if self.latency is not None else []
        paced = {"latency": ("latency_ms",), "macs": ("macs",), "params": ("params",)}  # without a target, all follow the schedule
        self.paced = paced.get(kind, ("latency_ms", "macs", "params"))
        self.budgets = Budgets(
            latency_ms=min(budgets_ms) if budgets_ms else None,
            macs=self.macs if self.macs is not None else (target.fraction if kind == "macs" else None),
            params=self.params if self.params is not None else (target.fraction if kind == "params" else None),
        )
        if self.budgets == Budgets():
            raise ConfigError("stages.latency_allocation", "no budget", "structured.target {latency: f}, {macs: f} or {params: f}, or macs/params here")
        ctx.calibration.batches("latency_allocation", 1)  # refused now, naming calibration_data and loss_fn, if absent
        self.channels.allocator = self

    def groups(self, channels: Any) -> list[Any]:
        """The groups to remove at the channel pruner's current update (and trial ratio, while it bisects to a target).

        The widths come from a search under the budgets moved the schedule's share of the way from dense, so each
        update (and each trial of a bisection to the target) cuts where the next step of resources costs least loss.
        """
        index = channels.ranker.current_step
        ratio = channels.ranker.per_step_pruning_ratio[index + 1]
        progress = min(ratio / channels.schedule.final, 1.0) if channels.schedule.final else 1.0
        if progress <= 0:  # the schedule asks nothing yet: no sensitivity to measure
            return []
        if self._plan is None or self._plan[0] != index:
            self._plan = (index, self._allocate(channels))
        _, infos = self._plan
        widths = search(self.table, self.ctx.module, infos, self.budgets.partial(progress, self.table.dense_ms, self.paced))
        chosen = []
        graph = channels.ranker.DG
        for number, info in enumerate(infos):
            keep, current = widths[number], graph.get_out_channels(info.root)
            if keep >= current:
                continue
            handler = info.group[0].dep.handler
            whole = graph.get_pruning_group(info.root, handler, list(range(current)))
            importance = channels.ranker.estimate_importance(whole)
            order = torch.argsort(importance).tolist() if importance is not None else list(range(current))
            chosen.append(graph.get_pruning_group(info.root, handler, sorted(order[: current - keep])))
        return chosen

    def _allocate(self, channels: Any) -> list[GroupInfo]:
        ranker, model = channels.ranker, self.ctx.module
        names = {id(module): name for name, module in model.named_modules()}
        batches = self.ctx.calibration.batches("latency_allocation", self.batches)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()

        def loss() -> float:
            if self.recalibrate:
                return recalibrated_loss(model, batches, self.ctx.calibration.loss)
            with torch.no_grad():
                return float(sum(float(self.ctx.calibration.loss(model, batch)) for batch in batches) / len(batches))

        infos: list[GroupInfo] = []
        try:
            with editing(model):
                groups = [g for g in ranker.DG.get_all_groups(ignored_layers=ranker.ignored_layers, root_module_types=ranker.root_module_types)
                          if ranker.DG.is_out_channel_pruning_fn(g[0].dep.handler)]
                scored = [(g, ranker.estimate_importance(g)) for g in groups]
                scored = [(g, s) for g, s in scored if s is not None]
                measured = sensitivity(scored, loss)
        finally:
            for module, training in modes:
                module.train(training)
        for (group, _), points in zip(scored, measured):
            root = group[0].dep.target.module
            outs, ins = timed_members(group, names, self.table, ranker.DG)
            width = ranker.DG.get_out_channels(root)
            start = channels._initial_out.get(root, width)
            step = auto_round_to(start) if self.round_to == "auto" else self.round_to
            floor = math.ceil(math.ceil(start * (1 - channels.max_layer_ratio)) / step) * step
            infos.append(GroupInfo(group, root, outs, ins, width, min(floor, width), points, step))
        final = search(self.table, model, infos, self.budgets)
        log.info("latency allocation: widths at the full budgets %s", {names.get(id(i.root)): final[n] for n, i in enumerate(infos)})
        return infos

    def _table_step(self) -> int:
        """The width step the latency table samples at: the given ``round_to``, or the finest step ``auto`` takes."""
        return self.round_to if isinstance(self.round_to, int) else STEPS[-1]

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """The plan's groups refer to replaced parameters: it is made afresh (sensitivity re-measured) at the next update."""
        self._plan = None
