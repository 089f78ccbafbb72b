"""Width pruning of Llama-family decoders (grouped-query heads, gated-MLP neurons) as a stage, at one step.

Recipe entry (``stages:``)::

    {type: gqa_width, kv_groups: 1, queries_per_group: 4, intermediate: 256, at: 0, importance: activation}

``importance: activation`` (the default) scores heads and neurons on the Pruner's calibration
data (its first ``calibration_batches``; the example inputs when there is none); ``weight`` by
weight norms. Combined with ``depth`` in one ``stages:`` list, their order is the recipe's: the
stage listed first acts first when both act at the same step.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from pruneaware.core.context import Context
from pruneaware.core.errors import ConfigError, StateError
from pruneaware.core.registry import register_stage
from pruneaware.core.stage import Stage
from pruneaware.structured.gqa import IMPORTANCE, Plan, apply_gqa_plan, choose_gqa, llama_layers
from pruneaware.structured.surgery import ParameterRemap


@register_stage("gqa_width")
class GQAWidth(Stage):
    """Keeps ``kv_groups`` KV groups, ``queries_per_group`` query heads per group and ``intermediate`` MLP neurons, at step ``at``."""

    name = "gqa_width"
    changes_structure = True
    follows_structure = True
    revives_pruned = False

    def __init__(
        self, kv_groups: int | None = None, queries_per_group: int | None = None, intermediate: int | None = None, at: int = 0,
        importance: str = "activation", calibration_batches: int = 4,
    ):
        if kv_groups is None and queries_per_group is None and intermediate is None:
            raise ConfigError("stages.gqa_width", None, "at least one of kv_groups, queries_per_group, intermediate")
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise ConfigError("stages.gqa_width.at", at, "a step >= 0")
        if importance not in IMPORTANCE:
            raise ConfigError("stages.gqa_width.importance", importance, IMPORTANCE)
        if isinstance(calibration_batches, bool) or not isinstance(calibration_batches, int) or calibration_batches < 1:
            raise ConfigError("stages.gqa_width.calibration_batches", calibration_batches, "a whole number of batches >= 1")
        self.options = {"kv_groups": kv_groups, "queries_per_group": queries_per_group, "intermediate": intermediate}
        self.at, self.importance, self.calibration_batches = at, importance, calibration_batches
        self.plan: Plan | None = None

    def setup(self, ctx: Context) -> None:
        llama_layers(ctx.module)  # refuse other models when the Pruner is built
        if self.importance == "activation" and ctx.calibration.data is None and ctx.example_inputs is None:
            raise ConfigError("calibration_data", None, "calibration batches or example_inputs for the Pruner: gqa_width importance 'activation' runs the model on data (or use importance 'weight')")

    def _batches(self, ctx: Context) -> list[Any] | None:
        if self.importance == "weight":
            return None
        data = ctx.calibration.data
        if data is None:
            return [ctx.example_inputs]
        return [inputs for inputs, _ in itertools.islice(iter(data), self.calibration_batches)]

    def update(self, ctx: Context) -> None:
        if ctx.step == self.at and self.plan is None:
            self.plan = choose_gqa(ctx.module, **self.options, importance=self.importance, batches=self._batches(ctx))
            ctx.announce_structure_change(apply_gqa_plan(ctx.module, self.plan))

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """It keeps nothing shaped like the weights."""

    def last_change(self, ctx: Context) -> int | None:
        return self.at

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.plan is not None, "plan": self.plan}

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        """Repeat the saved cut (the heads and neurons it kept) on the fresh model; a step-0 cut made again must have kept the same."""
        if not state.get("done"):
            return
        plan = state.get("plan")
        if self.plan is not None:  # this Pruner cut at step 0 already, when it was built
            if plan is not None and plan != self.plan:
                raise StateError("the saved gqa_width cut kept other heads or neurons than this Pruner's step-0 cut (other weights or calibration data): resume from the model and data the run started with")
            return
        if plan is None:  # saved before plans were recorded, when every cut was by weight norm
            raise StateError(f"a gqa_width cut made at step {self.at} cannot be replayed from a state that records no kept heads and neurons (its choice depended on trained weights)")
        self.plan = plan
        ctx.announce_structure_change(apply_gqa_plan(ctx.module, plan))
