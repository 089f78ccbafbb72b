"""``pruneaware run --latency-target F``: a structured recipe's target replaced by a latency budget."""

from __future__ import annotations

from typing import Any

from pruneaware.core.errors import ConfigError


def with_latency_target(spec: Any, fraction: float, backend: str = "torch", batch: int = 1) -> Any:
    """A copy of the run spec whose structured target is ``{latency: fraction}`` on ``backend`` at ``batch``.

    A schedule whose final fraction is below ``max_layer_ratio`` is raised to it, so that the target, not the
    schedule's end, decides where removal stops (the schedule still sets the pace).
    """
    mapping = spec.to_mapping()
    if mapping.get("structured") is None:
        raise ConfigError("--latency-target", fraction, "a recipe that removes channels (a 'structured' section), e.g. pruneaware run structured --latency-target 0.5")
    if not 0 < fraction < 1:
        raise ConfigError("--latency-target", fraction, "a fraction of the dense model's latency between 0 and 1, e.g. 0.5")
    if batch < 1:
        raise ConfigError("--latency-batch", batch, "the batch size the model is deployed at, an integer >= 1")
    structured = dict(mapping["structured"])
    schedule = dict(structured["schedule"])
    ceiling = spec.recipe.structured.max_layer_ratio
    if "final" in schedule and schedule["final"] < ceiling:
        schedule["final"] = ceiling
    mapping["structured"] = {**structured, "schedule": schedule, "target": {"latency": fraction, "backend": backend, "batch": batch}}
    return type(spec).from_mapping(mapping)
