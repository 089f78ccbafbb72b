"""Iterative magnitude pruning with rewinding (lottery tickets: Frankle & Carbin 2019; Frankle et al. 2020)."""

from __future__ import annotations

from typing import Any

from pruneaware.core.errors import ConfigError
from pruneaware.recipe import Recipe


def lottery_ticket(
    keep: float = 0.8,
    rounds: int = 5,
    *,
    every: float | None = None,
    rewind_to: float = 0.0,
    reinit: bool = False,
    optimizer: str = "reset",
    seed: int = 0,
    unit: str = "fraction",
    allocation: str = "global",
    **recipe_fields: Any,
) -> Recipe:
    """Train a round, keep ``keep`` of the surviving weights by magnitude, rewind them to step ``rewind_to``, retrain; ``rounds`` times.

    ``every`` is the length of a round; by default training is split into ``rounds + 1`` equal
    rounds, the last one training the final ticket. ``rewind_to=0`` gives the original lottery
    ticket, a small positive time late rewinding; ``reinit=True`` is the random-reinitialization
    control (same masks, the last round from a fresh initialization drawn under ``seed``).
    ``optimizer='reset'`` restarts momentum and Adam moments at each rewind; ``allocation`` is the
    element granularity's scope (``global``, ``layer``, ``er``, ``erk``).
    """
    if every is None:
        if unit != "fraction":
            raise ConfigError("every", every, f"the length of one round in {unit}s (only unit 'fraction' splits training by itself)")
        every = 1.0 / (rounds + 1)
    schedule = {"type": "iterative", "keep": keep, "rounds": rounds, "begin": every, "every": every, "unit": unit}
    rewind = {"to": rewind_to, "reinit": reinit, "optimizer": optimizer, "seed": seed}
    pruning = {"schedule": schedule, "criterion": "magnitude", "granularity": {"type": "element", "scope": allocation}, "rewind": rewind}
    return Recipe.from_dict({"name": "lottery_ticket", "pruning": pruning, **recipe_fields})
