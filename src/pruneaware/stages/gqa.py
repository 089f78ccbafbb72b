"""Width pruning of Llama-family decoders (grouped-query heads, gated-MLP neurons) as a stage, at one step.

Recipe entry (``stages:``)::

    {type: gqa_width, kv_groups: 1, queries_per_group: 4, intermediate: 256, at: 0}

Combined with ``depth`` in one ``stages:`` list, their order is the recipe's: the stage listed
first acts first when both act at the same step.
"""

from __future__ import annotations

from collections.abc import Sequence

from pruneaware.core.context import Context
from pruneaware.core.registry import register_stage
from pruneaware.core.stage import Stage
from pruneaware.core.errors import ConfigError, StateError
from pruneaware.structured.gqa import llama_layers, prune_gqa
from pruneaware.structured.surgery import ParameterRemap


@register_stage("gqa_width")
class GQAWidth(Stage):
    """Keeps ``kv_groups`` KV groups, ``queries_per_group`` query heads per group and ``intermediate`` MLP neurons, at step ``at``."""

    name = "gqa_width"
    changes_structure = True
    follows_structure = True
    revives_pruned = False

    def __init__(self, kv_groups: int | None = None, queries_per_group: int | None = None, intermediate: int | None = None, at: int = 0):
        if kv_groups is None and queries_per_group is None and intermediate is None:
            raise ConfigError("stages.gqa_width", None, "at least one of kv_groups, queries_per_group, intermediate")
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise ConfigError("stages.gqa_width.at", at, "a step >= 0")
        self.options = {"kv_groups": kv_groups, "queries_per_group": queries_per_group, "intermediate": intermediate}
        self.at, self.done = at, False

    def setup(self, ctx: Context) -> None:
        llama_layers(ctx.module)  # refuse other models when the Pruner is built

    def update(self, ctx: Context) -> None:
        if ctx.step == self.at and not self.done:
            self.done = True
            ctx.announce_structure_change(prune_gqa(ctx.module, **self.options))

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """It keeps nothing shaped like the weights."""

    def last_change(self, ctx: Context) -> int | None:
        return self.at

    def state_dict(self) -> dict[str, bool]:
        return {"done": self.done}

    def load_state_dict(self, state, ctx: Context) -> None:  # type: ignore[no-untyped-def]
        """Repeat a step-0 cut on the fresh model (its weights, as at step 0, choose the same heads and neurons)."""
        if state.get("done") and self.at > 0:
            raise StateError(f"a gqa_width cut made at step {self.at} cannot be replayed on a fresh model (its choice depended on trained weights); cut at step 0 to resume")
        if state.get("done") and not self.done:
            self.done = True
            ctx.announce_structure_change(prune_gqa(ctx.module, **self.options))
