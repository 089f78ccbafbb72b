"""Bounded numeric types for recipe fields: strict (no ``true`` for 1, no ``"0"`` for 0), finite, within meaningful ranges.

Every number in a recipe goes through one of these, so an absurd value (``strength: .inf``,
``rounds: 1e30``, ``shape: [1000000, 1]``) is refused at validation, naming its field, instead of
turning the model into NaN or exhausting memory in the middle of training.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

MAX_SPARSITY = 0.999
"""The largest sparsity a recipe may ask for: one weight in a thousand kept (1.0 would remove every weight)."""

MAX_SEED = 2**63 - 1
MAX_COUNT = 1000
"""Upper bound of repetition counts (rounds, calibration batches, samples): each one costs a forward and backward pass."""

MAX_BLOCK = 1024
"""Upper bound of each side of a pruning block and of N:M's M (a block larger than the layer is the whole layer)."""

Flag = Annotated[bool, Strict()]
Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]
Count = Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT)]
BlockSide = Annotated[int, Strict(), Field(ge=1, le=MAX_BLOCK)]
Fraction = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
Time = Annotated[float, Strict(), Field(ge=0, le=1e9, allow_inf_nan=False)]
"""A time in steps, epochs or fractions of training (the unit decides the upper bound later)."""
LearningRate = Annotated[float, Strict(), Field(gt=0, le=10, allow_inf_nan=False)]
Score = Annotated[float, Strict(), Field(ge=-100, le=100, allow_inf_nan=False)]
"""A learned score's start or threshold: scores pass a sigmoid, which is flat beyond +-100."""
WeightStrength = Annotated[float, Strict(), Field(gt=0, le=1, allow_inf_nan=False)]
"""Strength of a penalty summed over every weight (L1, L0): above 1 it outweighs any loss and removes everything."""
MeanStrength = Annotated[float, Strict(), Field(ge=0, le=1000, allow_inf_nan=False)]
"""Strength of a penalty averaged over the weights (soft movement)."""
Decay = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
Exponent = Annotated[float, Strict(), Field(gt=0, le=100, allow_inf_nan=False)]
