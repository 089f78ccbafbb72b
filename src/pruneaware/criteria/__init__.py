"""Criteria: how much each weight (or channel group) matters, chosen by name from one registry per kind.

``CRITERIA`` holds the element criteria a recipe's ``pruning.criterion`` names (``element``:
magnitude, random, taylor, movement, fisher; ``probing``: snip, grasp, synflow, obd; ``wanda``);
``channel.CHANNEL_CRITERIA`` the channel criteria ``structured.importance`` names.
"""

from pruneaware.criteria.element import CRITERIA, Criterion, Fisher, Magnitude, Movement, Random, Taylor
from pruneaware.criteria import probing as _probing  # noqa: F401  (registers snip, grasp, synflow, obd)
from pruneaware.criteria import wanda as _wanda  # noqa: F401  (registers "wanda")

__all__ = ["CRITERIA", "Criterion", "Fisher", "Magnitude", "Movement", "Random", "Taylor"]
