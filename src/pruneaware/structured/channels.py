"""Channel pruning inside training: Torch-Pruning ranks coupled channel groups, we remove them tracked."""

from __future__ import annotations

import bisect
import copy
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch_pruning as tp
from torch import nn

from pruneaware.core.errors import StateError
from pruneaware.criteria.channel import CHANNEL_CRITERIA, GradientImportance
from pruneaware.schedules import Schedule
from torch_pruning._helpers import to_plain_idxs

from pruneaware.structured.attention import AttentionHeads
from pruneaware.structured.graph import build_dependency_graph, editing, patch_ranker, tracing, unwrap_model
from pruneaware.structured.soft import group_keep_masks, zero_removed_
from pruneaware.structured.surgery import ParameterRemap, chain, prune_group_tracked
from pruneaware.structured.target import ResourceTarget

if TYPE_CHECKING:
    from pruneaware.distributed.sync import RankZeroSync

log = logging.getLogger(__name__)

OFFSET_OPS = {tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.SLICE, tp.ops.OPTYPE.EXPAND}
"""Operations after which a group's indices are offsets into a shared tensor: removing one group shifts the others'."""


class ChannelPruner:
    """Removes the least important channel groups at each update step of ``schedule``.

    The schedule's value is the fraction of channels removed (relative to the model it started
    from), per layer with ``allocation='uniform'`` or ranked across layers with ``'global'``;
    ``max_layer_ratio`` caps any one layer and ``round_to`` keeps channel counts multiples of it.
    With a ``sync`` (distributed runs) every rank removes the groups rank 0 selected.
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
        phase: Literal["hard", "soft"] = "hard",
        remove_step: int | None = None,
        target: ResourceTarget | None = None,
        heads: bool = True,
        sync: RankZeroSync | None = None,
    ):
        self.model = unwrap_model(model)
        self.sync = sync
        self.schedule = schedule
        self.example_inputs = example_inputs
        self.phase = phase
        self.remove_step = schedule.last_step if remove_step is None else remove_step
        self.target = target
        self.finished = False
        self._soft_groups: list[Any] = []
        self._preview: tuple[int, list[Any]] | None = None  # (update, groups it would select), see preview()
        self.max_layer_ratio = max_layer_ratio
        self.round_to = round_to
        updates = schedule.update_steps()
        ratios = [0.0] + [schedule.value_at(step) for step in updates]
        scheduler: Callable[[float, int], list[float]] = lambda _ratio, _steps: ratios  # noqa: E731
        self.attention = AttentionHeads(self.model, ignored, whole_heads=heads, max_layer_ratio=max_layer_ratio)
        with tracing(self.model):
            self.ranker = tp.pruner.BasePruner(
                self.model,
                example_inputs,
                importance=CHANNEL_CRITERIA.build(importance),
                global_pruning=allocation == "global",
                pruning_ratio=schedule.final,
                iterative_steps=len(updates),
                iterative_pruning_ratio_scheduler=scheduler,
                max_pruning_ratio=max_layer_ratio,
                ignored_layers=list(ignored),
                round_to=round_to,
                in_channel_groups={},  # Torch-Pruning shares mutable defaults between pruners
                out_channel_groups={},
                **self.attention.pruner_options(),
            )
            patch_ranker(self.ranker)
            if updates[:1] != [0]:  # a ranking at step 0 fixes them itself
                self._fix_reference_channel_counts()
        graph = self.ranker.DG
        self._offsets_move = bool(self.attention.found) or any(node.type in OFFSET_OPS for node in graph.module2node.values())
        self._initial_out = {m: graph.get_out_channels(m) for m in self.model.modules() if m in graph.module2node}
        self._prunable = [m for m in self._initial_out if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m not in set(ignored)]
        self._dense_resource = target.measure(self.model, example_inputs) if target is not None else None
        if hasattr(target, "check_reachable"):  # a latency target refuses a budget beyond max_layer_ratio at once
            target.check_reachable(self.model, self._dense_resource, max_layer_ratio, ignored)

    def _fix_reference_channel_counts(self) -> None:
        """Rank once now, removing nothing (the schedule's ratio at index 0 is 0).

        Torch-Pruning fixes each ranking scope's reference channel count at its first ranking; doing it
        here makes every later target relative to the model as built, also when a resumed run replays
        its removals before the next one. Only the channel counts matter, so random scores stand in
        for the real criterion (which may need gradients that do not exist yet, and costs more).
        """
        chosen = self.ranker.importance
        self.ranker.importance = tp.importance.RandomImportance()
        self.ranker.current_step = -1
        try:
            removed = list(self.ranker.step(interactive=True))
        finally:
            self.ranker.importance = chosen
        if removed:
            raise RuntimeError("ranking at ratio 0 selected channels to remove")

    def update(self, step: int) -> list[ParameterRemap]:
        """Do what the recipe asks at training step ``step``: zero channels (soft phase), remove them, or nothing.

        Returns how every replaced parameter maps, for the optimizer and masks to follow.
        """
        if self.finished:
            return []
        soft = self.phase == "soft" and step <= self.remove_step
        remaps: list[ParameterRemap] = []
        if self.schedule.is_update_step(step):
            index = bisect.bisect_left(self.schedule.update_steps(), step)
            self.ranker.current_step = index
            groups = self._ranked_groups()
            if self.target is not None and self._target_met(self._slim_copy(groups)):
                groups = self._just_enough(index, groups)
                self.finished = True
            groups, self.finished = self._agreed(groups, self.finished)
            if soft and not self.finished:
                self._soft_groups = groups
                self._restart_gradient_window()
                zero_removed_(group_keep_masks(groups))
            else:
                remaps = self._remove(groups)
                self._report(step)
        if soft and step == self.remove_step and not self.finished:
            remaps = self._remove(self._soft_groups)
            self._report(step)
        return chain(remaps)

    def removed_fraction(self) -> float:
        """Fraction of the prunable layers' original output channels removed so far, counted on the model."""
        before = sum(self._initial_out[m] for m in self._prunable)
        after = sum(self.ranker.DG.get_out_channels(m) for m in self._prunable)
        return 1.0 - after / before if before else 0.0

    def _report(self, step: int) -> None:
        """Log what was removed against what the schedule asked; warn when the caps held a real share back."""
        asked, removed = self.schedule.target(step), self.removed_fraction()
        log.info("step %d: %.1f%% of channels removed, %.1f%% asked", step, 100 * removed, 100 * asked)
        if self.target is None and asked - removed > 0.02:
            log.warning(
                "step %d: only %.1f%% of channels removed where the schedule asks %.1f%%: max_layer_ratio (%g), round_to "
                "or ranking ties held the rest back; raise max_layer_ratio or lower the schedule to make them agree",
                step, 100 * removed, 100 * asked, self.max_layer_ratio,
            )

    def _ranked_groups(self) -> list[Any]:
        """The channel groups to remove at the ranker's current ratio, each within its layer's cap."""
        if getattr(self, "allocator", None) is not None:  # a stage chooses the widths (stages.latency_allocation)
            return self.allocator.groups(self)
        with editing(self.model):
            groups = [self.attention.within_cap(self._within_layer_cap(g), self.ranker) for g in self.ranker.step(interactive=True)]
        self.attention.sync(ranker=self.ranker)  # ranking lowered the ranker's head counts; the model's are the truth
        return [group for group in groups if group is not None]

    def _agreed(self, groups: list[Any], finished: bool) -> tuple[list[Any], bool]:
        """Rank 0's selection (and whether it met the target) on every rank; as they are without a sync.

        Rankings may differ between ranks (random importance draws from each rank's generator),
        so the groups travel as (root module name, direction, indices) and are rebuilt here.
        """
        if self.sync is None:
            return groups, finished
        described, finished = self.sync.choice((self._describe(groups), finished))
        return _groups_on(self.ranker.DG, self.model, described), finished

    def _remove(self, groups: list[Any]) -> list[ParameterRemap]:
        """Physically remove ``groups`` (tracked), ending the soft phase if one was running."""
        remaps: list[ParameterRemap] = []
        with editing(self.model):
            if self._offsets_move:  # one at a time: a removal moves the concat/split offsets later groups map to
                for removal in self._describe(groups):
                    (group,) = _groups_on(self.ranker.DG, self.model, [removal])
                    remaps.extend(prune_group_tracked(self.model, group))
            else:
                for group in groups:
                    remaps.extend(prune_group_tracked(self.model, group))
        self.attention.sync(ranker=self.ranker)
        self._soft_groups = []
        self._preview = None
        self._restart_gradient_window()
        return chain(remaps)

    def _target_met(self, model: nn.Module) -> bool:
        if self.target is None:
            return False
        return self.target.met(self.target.measure(model, self.example_inputs), self._dense_resource)

    def _slim_copy(self, groups: list[Any]) -> nn.Module:
        """A copy of the model with ``groups`` removed for real (to measure MACs or parameters)."""
        slim = copy.deepcopy(self.model)
        graph = build_dependency_graph(slim, self.example_inputs)
        with editing(slim):
            for removal in self._describe(groups):
                (group,) = _groups_on(graph, slim, [removal])
                group.prune()
        self.attention.sync(slim)
        return slim

    def _just_enough(self, index: int, groups: list[Any], rounds: int = 6) -> list[Any]:
        """The smallest removal (ratio bisected between the previous update's and this one's) that meets the target.

        Coarse schedules would otherwise overshoot: one update can take MACs from well above the
        target to far below it. Each round ranks at a trial ratio and measures a pruned copy.
        """
        ratios = self.ranker.per_step_pruning_ratio  # the list the ranker reads; heads read the same list
        low, high, original = ratios[index], ratios[index + 1], ratios[index + 1]
        best = groups
        try:
            for _ in range(rounds):
                trial = (low + high) / 2
                ratios[index + 1] = trial
                self.ranker.current_step = index
                candidate = self._ranked_groups()
                if self._target_met(self._slim_copy(candidate)):
                    best, high = candidate, trial
                else:
                    low = trial
        finally:
            ratios[index + 1] = original
        return best

    def _describe(self, groups: list[Any]) -> list[tuple[str, bool, list[int]]]:
        """Groups as (root module name, out-channel pruning?, root indices): rebuildable on another graph."""
        graph = self.ranker.DG
        described = []
        for group in groups:
            dep, indices = group[0]
            name = graph._module2name[dep.target.module]
            described.append((name, graph.is_out_channel_pruning_fn(dep.handler), [int(i) for i in to_plain_idxs(indices)]))
        return described

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

    def observe(self) -> None:
        """Before an optimizer step: a gradient-based importance (taylor, fisher) accumulates this step's gradients."""
        scorer = self._gradient_importance()
        if scorer is not None:
            scorer.observe(self.model)

    def preview(self, step: int) -> list[Any]:
        """The groups the first update after training step ``step`` would select; nothing is changed.

        Ranked once per interval between updates and kept (a ranking costs about a training step);
        empty after the last update, or while a gradient-based importance has seen no step yet.
        """
        updates = self.schedule.update_steps()
        upcoming = next((update for update in updates if update > step), None)
        if self.finished or upcoming is None:
            return []
        if self._preview is None or self._preview[0] != upcoming:
            scorer = self._gradient_importance()
            if scorer is not None and not scorer.ready:
                return []
            current = self.ranker.current_step
            self.ranker.current_step = bisect.bisect_left(updates, upcoming)
            try:
                self._preview = (upcoming, self._agreed(self._ranked_groups(), False)[0])
            finally:
                self.ranker.current_step = current
        return self._preview[1]

    def _gradient_importance(self) -> GradientImportance | None:
        importance = self.ranker.importance
        return importance if isinstance(importance, GradientImportance) else None

    def _restart_gradient_window(self) -> None:
        """After a ranking or removal, gradient statistics start afresh (they described the channels as they were)."""
        scorer = self._gradient_importance()
        if scorer is not None:
            scorer.reset()

    def state_dict(self) -> dict[str, Any]:
        """Removals so far (replayable on a freshly built model), the pending soft selection, and whether a target stopped pruning."""
        scorer = self._gradient_importance()
        return {
            "history": self.ranker.pruning_history(),
            "soft": self._describe(self._soft_groups),
            "finished": self.finished,
            "gradients": scorer.state_dict(self.model) if scorer is not None else None,
            "preview": (self._preview[0], self._describe(self._preview[1])) if self._preview is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> list[ParameterRemap]:
        """Repeat saved removals on this freshly built model and restore the soft selection; returns the remaps.

        Removals this pruner already made (a schedule that starts at step 0 acts when the pruner is
        built) must be the first saved ones; only the rest are repeated.
        """
        done, saved = self.ranker.pruning_history(), state["history"]
        if [_removal_key(r) for r in done] != [_removal_key(r) for r in saved[: len(done)]]:
            raise StateError(
                "this model has had channels removed that the saved run did not remove first; "
                "load the state into a freshly built model with the same initial weights"
            )
        remaps = self._replay(saved[len(done) :])
        self._soft_groups = _groups_on(self.ranker.DG, self.model, state["soft"])
        self.finished = bool(state["finished"])
        scorer = self._gradient_importance()
        if scorer is not None and state.get("gradients") is not None:
            scorer.load_state_dict(state["gradients"], self.model)
        if state.get("preview") is not None:
            update, described = state["preview"]
            self._preview = (int(update), _groups_on(self.ranker.DG, self.model, described))
        return remaps

    def _replay(self, history: list[Any]) -> list[ParameterRemap]:
        remaps: list[ParameterRemap] = []
        with editing(self.model):
            for removal in history:  # one at a time: each group is built on the graph as the previous left it
                (group,) = _groups_on(self.ranker.DG, self.model, [removal])
                remaps.extend(prune_group_tracked(self.model, group))
        self.attention.sync(ranker=self.ranker)
        return chain(remaps)


def _groups_on(graph: Any, model: nn.Module, described: Sequence[Any]) -> list[Any]:
    """Rebuild described groups (root module name, out-channel pruning?, indices) on ``graph`` of ``model``."""
    modules = dict(model.named_modules())
    groups = []
    for module_name, out_channels, indices in described:
        if module_name not in modules:
            raise StateError(f"saved channel removal names module {module_name!r}, which this model does not have")
        module = modules[module_name]
        function = graph.get_pruner_of_module(module)
        handler = function.prune_out_channels if out_channels else function.prune_in_channels
        groups.append(graph.get_pruning_group(module, handler, list(indices)))
    return groups


def _removal_key(removal: Sequence[Any]) -> tuple[str, bool, tuple[int, ...]]:
    """A saved or live history entry in comparable form (indices may be Torch-Pruning's hybrid indices)."""
    name, out_channels, indices = removal
    return name, bool(out_channels), tuple(int(i) for i in to_plain_idxs(list(indices)))
