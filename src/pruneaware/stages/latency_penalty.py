"""A differentiable latency penalty: group norms weighted by the time each channel costs on the device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.context import Context
from pruneaware.core.registry import register_stage
from pruneaware.core.stage import Stage
from pruneaware.core.errors import ConfigError
from pruneaware.hardware.build import latency_table
from pruneaware.hardware.layers import TIMED, layer_widths
from pruneaware.hardware.table import LatencyTable
from pruneaware.regularizers.channel import safe_norm
from pruneaware.structured.slicing import ChannelLayout
from pruneaware.structured.surgery import ParameterRemap


def channel_costs(layout: ChannelLayout, table: LatencyTable, model: nn.Module, step: int = 8) -> Tensor:
    """Per channel of ``layout``, the milliseconds one channel of its group costs: the table's slope, at the current
    widths, of every timed layer the group cuts (outputs of its producers, inputs of its consumers)."""
    names = {id(module): name for name, module in model.named_modules()}
    group_ids = layout.group_ids().cpu()
    costs = torch.zeros(len(layout.sizes))
    seen: set[tuple[int, int, bool]] = set()
    for piece in layout.slices:
        name = names.get(id(piece.module))
        if not isinstance(piece.module, TIMED) or piece.name != "weight" or name not in table.contexts:
            continue
        group = int(group_ids[int(piece.channels[0])])
        if (group, id(piece.module), piece.out) in seen:
            continue
        seen.add((group, id(piece.module), piece.out))
        in_width, out_width = layer_widths(piece.module)
        if table.contexts[name].depthwise or piece.out:
            smaller = (in_width, max(out_width - step, 1)) if not table.contexts[name].depthwise else (max(in_width - step, 1),) * 2
            cut = out_width - smaller[1]
        else:
            smaller, cut = (max(in_width - step, 1), out_width), in_width - max(in_width - step, 1)
        saved = table.layer_ms(name, in_width, out_width) - table.layer_ms(name, *smaller)
        costs[group] += max(saved, 0.0) / max(cut, 1)
    return costs[group_ids]


@register_stage("latency_penalty")
class LatencyPenalty(Stage):
    """``strength * sum over channels of w_c * ||coupled slices of c||_2`` while the structured schedule ramps, with
    ``w_c`` the latency one channel of c's group costs (from the latency table), normalised to mean 1: channels of
    slow layers are pushed toward zero harder, so removal takes time where it costs most."""

    name = "latency_penalty"
    follows_structure = True
    revives_pruned = False

    def __init__(self, strength: float, backend: str = "torch", batch: int = 1, threads: int | None = None):
        if not (isinstance(strength, (int, float)) and strength > 0):
            raise ConfigError("stages.latency_penalty.strength", strength, "a positive coefficient, e.g. 1e-4")
        self.strength = float(strength)
        self.options = {"backend": backend, "batch": batch, "threads": threads}
        self.channels: Any = None
        self.table: LatencyTable | None = None
        self._layout: tuple[ChannelLayout, Tensor] | None = None

    def setup(self, ctx: Context) -> None:
        from pruneaware.stages.channels import ChannelRemoval

        removal = next((stage for stage in ctx.stages if isinstance(stage, ChannelRemoval)), None)
        if removal is None:
            raise ConfigError("stages.latency_penalty", "without channel removal", "a recipe with a structured section: the penalty steers which channels it removes")
        self.channels = removal.channels
        target = self.channels.target
        self.table = getattr(target, "table", None) or latency_table(ctx.module, ctx.example_inputs, **self.options)

    def weights(self, ctx: Context) -> tuple[ChannelLayout, Tensor]:
        """The prunable channels and each one's latency weight (rebuilt after a removal changes the groups or widths)."""
        if self._layout is None or self._layout[0].is_stale():
            ranker = self.channels.ranker
            layout = ChannelLayout(ranker.DG.get_all_groups(ignored_layers=ranker.ignored_layers, root_module_types=ranker.root_module_types))
            costs = channel_costs(layout, self.table, ctx.module)
            mean = costs.mean() if len(costs) else torch.tensor(1.0)
            self._layout = (layout, (costs / mean.clamp_min(1e-12)).to(layout._device() or "cpu"))
        return self._layout

    def penalty(self, ctx: Context) -> Tensor | float:
        if ctx.step > self.channels.schedule.last_step or self.channels.finished:
            return 0.0
        layout, weights = self.weights(ctx)
        if not layout.channels:
            return 0.0
        return self.strength * (weights * safe_norm(layout.sums(torch.square))).sum()

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """The groups are re-read from the channel pruner's graph once a removal has made them stale."""
