"""The Pruner's checkpoint state: ``{format: 2, recipe, step, masks, stages: {name: state}}``; format 1 still loads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pruneaware.core.context import Context
from pruneaware.core.legacy import upgrade_state
from pruneaware.core.stage import Stage
from pruneaware.core.errors import StateError
from pruneaware.recipe import Recipe

STATE_FORMAT = 2


def save_state(recipe: Recipe, stages: Sequence[Stage], ctx: Context) -> dict[str, Any]:
    """Step, masks and each stage's state under its name, with the recipe's fingerprint."""
    states = {stage.name: stage.state_dict() for stage in stages}
    return {"format": STATE_FORMAT, "recipe": recipe.fingerprint(), "step": ctx.step, "masks": ctx.masks.state_dict(), "stages": states}


def load_state(recipe: Recipe, stages: Sequence[Stage], ctx: Context, state: Mapping[str, Any]) -> None:
    """Restore ``save_state``'s result: stages that change shapes first (saved tensors then fit), the other stages, the masks."""
    if state.get("format") not in (1, STATE_FORMAT):
        raise StateError(f"pruner state format {state.get('format')!r} is not {STATE_FORMAT} (or 1); was it saved by pruneaware?")
    state = upgrade_state(state) if state["format"] == 1 else state
    if state["recipe"] != recipe.fingerprint():
        raise StateError(
            f"pruner state was saved with a different recipe (fingerprint {state['recipe']}, this recipe "
            f"{recipe.fingerprint()}); resume with the recipe the run started with"
        )
    unknown = sorted(set(state["stages"]) - {stage.name for stage in stages})
    if unknown:
        raise StateError(f"the state holds stages {unknown} that this recipe does not have; resume with the recipe the run started with")
    for stage in sorted(stages, key=lambda stage: not stage.changes_structure):
        stage.load_state_dict(state["stages"].get(stage.name, {}), ctx)
    ctx.masks.load_state_dict(state["masks"])  # validates first: a rejected state changes nothing
    ctx.step = int(state["step"])
