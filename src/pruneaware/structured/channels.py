"""Channel pruning inside training: Torch-Pruning ranks coupled channel groups, we remove them tracked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from pruneaware.errors import StateError
from pruneaware.registry import Registry
from pruneaware.schedules import Schedule
from pruneaware.structured.graph import tracing, unwrap_model
from pruneaware.structured.surgery import ParameterRemap, chain, prune_group_tracked

GROUP_IMPORTANCE: Registry[Any] = Registry("structured.importance")
GROUP_IMPORTANCE.register("l1")(lambda: tp.importance.GroupMagnitudeImportance(p=1))
GROUP_IMPORTANCE.register("l2")(lambda: tp.importance.GroupMagnitudeImportance(p=2))
GROUP_IMPORTANCE.register("bn_scale")(lambda: tp.importance.BNScaleImportance())
GROUP_IMPORTANCE.register("taylor")(lambda: tp.importance.GroupTaylorImportance())
GROUP_IMPORTANCE.register("random")(lambda: tp.importance.RandomImportance())


class ChannelPruner:
    """Removes the least important channel groups at each update step of ``schedule``.

    The schedule's value is the fraction of channels removed (relative to the model it started
    from), per layer with ``allocation='uniform'`` or ranked across layers with ``'global'``;
    ``max_layer_ratio`` caps any one layer and ``round_to`` keeps channel counts multiples of it.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        schedule: Schedule,
        *,
        importance: str = "l2",
        allocation: str = "global",
        ignored: Sequence[nn.Module] = (),
        max_layer_ratio: float = 0.9,
        round_to: int | None = None,
    ):
        self.model = unwrap_model(model)
        self.schedule = schedule
        self.max_layer_ratio = max_layer_ratio
        self.round_to = round_to
        updates = schedule.update_steps()
        ratios = [0.0] + [schedule.value_at(step) for step in updates]
        scheduler: Callable[[float, int], list[float]] = lambda _ratio, _steps: ratios  # noqa: E731
        with tracing(self.model):
            self.ranker = tp.pruner.BasePruner(
                self.model,
                example_inputs,
                importance=GROUP_IMPORTANCE.build(importance),
                global_pruning=allocation == "global",
                pruning_ratio=schedule.final,
                iterative_steps=len(updates),
                iterative_pruning_ratio_scheduler=scheduler,
                max_pruning_ratio=max_layer_ratio,
                ignored_layers=list(ignored),
                round_to=round_to,
                in_channel_groups={},  # Torch-Pruning shares mutable defaults between pruners
                out_channel_groups={},
                num_heads={},
            )
            self._fix_reference_channel_counts()
        graph = self.ranker.DG
        self._initial_out = {m: graph.get_out_channels(m) for m in self.model.modules() if m in graph.module2node}

    def _fix_reference_channel_counts(self) -> None:
        """Rank once now, removing nothing (the schedule's ratio at index 0 is 0).

        Torch-Pruning fixes each ranking scope's reference channel count at its first ranking; doing it
        here makes every later target relative to the model as built, also when a resumed run replays
        its removals before the next one. Magnitude ranking is used because no gradients exist yet.
        """
        chosen = self.ranker.importance
        self.ranker.importance = tp.importance.GroupMagnitudeImportance(p=2)
        self.ranker.current_step = -1
        try:
            removed = list(self.ranker.step(interactive=True))
        finally:
            self.ranker.importance = chosen
        if removed:
            raise RuntimeError("ranking at ratio 0 selected channels to remove")

    def prune(self) -> list[ParameterRemap]:
        """Remove the channels of the next update step; returns how every replaced parameter maps."""
        remaps: list[ParameterRemap] = []
        with tracing(self.model):
            for group in self.ranker.step(interactive=True):
                capped = self._within_layer_cap(group)
                if capped is not None:
                    remaps.extend(prune_group_tracked(self.model, capped))
        return chain(remaps)

    def _within_layer_cap(self, group: Any) -> Any:
        """The group, shrunk so its layer keeps at least ``1 - max_layer_ratio`` of its original channels.

        Torch-Pruning checks the cap only before ranking, so one global removal can overshoot it;
        here the excess is returned to the layer, keeping its most important channels.
        """
        dep, indices = group[0]
        module, handler = dep.target.module, dep.handler
        graph = self.ranker.DG
        if not graph.is_out_channel_pruning_fn(handler) or module not in self._initial_out:
            return group
        current = graph.get_out_channels(module)
        floor = math.ceil(self._initial_out[module] * (1 - self.max_layer_ratio))
        if self.round_to:
            floor = math.ceil(floor / self.round_to) * self.round_to
        allowed = max(current - floor, 0)
        if self.round_to:
            allowed -= allowed % self.round_to
        if len(indices) <= allowed:
            return group
        if allowed == 0:
            return None
        importance = self.ranker.estimate_importance(graph.get_pruning_group(module, handler, list(range(current))))
        chosen = torch.as_tensor(list(indices))
        if importance is not None and len(importance) == current:
            chosen = chosen[torch.argsort(importance[chosen])]
        return graph.get_pruning_group(module, handler, sorted(int(i) for i in chosen[:allowed]))

    def replay(self, history: list[Any], step: int) -> list[ParameterRemap]:
        """Repeat saved removals (``history()`` of a run at ``step``) on this model, tracked like ``prune``."""
        graph = self.ranker.DG
        names = dict(self.model.named_modules())
        remaps: list[ParameterRemap] = []
        with tracing(self.model):
            for module_name, out_channels, indices in history:
                if module_name not in names:
                    raise StateError(f"saved channel removal names module {module_name!r}, which this model does not have")
                module = names[module_name]
                function = graph.get_pruner_of_module(module)
                handler = function.prune_out_channels if out_channels else function.prune_in_channels
                remaps.extend(prune_group_tracked(self.model, graph.get_pruning_group(module, handler, list(indices))))
        self.ranker.current_step = sum(1 for update in self.schedule.update_steps() if update <= step)
        return chain(remaps)

    def history(self) -> list[Any]:
        """The structural edits so far, replayable on a freshly built model."""
        return self.ranker.pruning_history()
