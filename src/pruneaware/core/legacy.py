"""What earlier releases exposed: format-1 pruner states, and the Pruner's per-feature attributes (deprecated)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from pruneaware.core.stage import Stage

ATTRIBUTES = {
    "schedule": ("prune", "schedule"),
    "criterion": ("prune", "criterion"),
    "granularity": ("prune", "granularity"),
    "regularizer": ("regularizer", "regularizer"),
    "channels": ("channels", "channels"),
    "channel_regularizer": ("channel_regularizer", "regularizer"),
    "rewind": ("rewind", "rewind"),
    "splice": ("splice", "splice"),
    "regrow": ("regrow", "regrow"),
}
"""``pruner.<attribute>`` of format-1 days -> (stage name, the stage's attribute); None when the stage is absent."""

FORMAT_1_KEYS = {"criterion": ("prune", "criterion"), "rewind": ("rewind", "rewind"), "shadows": ("splice", "shadows"), "structure": ("channels", None)}


class LegacyAttributes:
    """The Pruner's per-feature attributes of format-1 days (``pruner.schedule``, ...), found in its stages (deprecated)."""

    stages: Sequence[Stage]

    def __getattr__(self, attribute: str) -> Any:
        if attribute in ATTRIBUTES and "stages" in self.__dict__:
            return legacy_attribute(self.stages, attribute)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}")


def legacy_attribute(stages: Sequence[Stage], attribute: str) -> Any:
    """The object an old ``pruner.<attribute>`` named, found in the stages (deprecated: use ``pruner.stage(name)``)."""
    stage_name, inner = ATTRIBUTES[attribute]
    warnings.warn(f"pruner.{attribute} is deprecated; use pruner.stage({stage_name!r}).{inner}", DeprecationWarning, stacklevel=3)
    stage = next((stage for stage in stages if stage.name == stage_name), None)
    return getattr(stage, inner) if stage is not None else None


def upgrade_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 pruner state (one key per feature, None or {} when absent) as format 2 (``stages: {name: state}``)."""
    stages: dict[str, Any] = {}
    for key, (stage, inner) in FORMAT_1_KEYS.items():
        if state.get(key):  # None or {}: the feature was absent or kept no state
            stages[stage] = dict(state[key]) if inner is None else {inner: state[key]}
    if state.get("regularizer"):
        stages["regularizer"] = dict(state["regularizer"])
    return {"format": 2, "recipe": state["recipe"], "step": state["step"], "masks": state["masks"], "stages": stages}


def with_stage_state(state: Mapping[str, Any], stage: str, stage_state: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A pruner ``state`` (format 1 or 2) with ``stage_state`` under ``stage``: job checkpoints of earlier releases kept QAT's beside it."""
    if stage_state is None:
        return state
    upgraded = upgrade_state(state) if state.get("format") == 1 else dict(state)
    return {**upgraded, "stages": {**upgraded.get("stages", {}), stage: dict(stage_state)}}
