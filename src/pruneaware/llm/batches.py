"""Calibration batches in the forms users hold them: token-id tensors, dicts of model inputs, or (inputs, targets) pairs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from pruneaware.core.errors import ConfigError

_EXPECTED = "an iterable of batches: token-id tensors, dicts of model inputs (input_ids, attention_mask) or (inputs, targets) pairs"


@dataclass(frozen=True)
class ModelInputs:
    """One batch as positional and keyword arguments of ``model(...)``; ``token_mask`` marks real (unpadded) tokens."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    token_mask: Tensor | None = None

    def run(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)


def as_model_inputs(batch: Any) -> ModelInputs:
    """``batch`` as model arguments: a tensor is the first positional argument, a mapping the keyword arguments."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        batch = batch[0]  # (inputs, targets) as given to Pruner(calibration_data=...)
    if isinstance(batch, Tensor):
        return ModelInputs(args=(batch,))
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        return ModelInputs(kwargs=dict(batch), token_mask=mask.bool() if isinstance(mask, Tensor) else None)
    raise ConfigError("calibration batch", type(batch).__name__, _EXPECTED)


def calibration_inputs(calibration: Iterable[Any] | None, *, limit: int | None = None, who: str = "one-shot pruning") -> list[ModelInputs]:
    """The first ``limit`` batches (all when None) as model inputs; a ConfigError when there are none."""
    if isinstance(calibration, Tensor):
        raise ConfigError("calibration", f"one tensor of shape {tuple(calibration.shape)}", f"a list of batches, e.g. list(ids.split(8)), for {who}")
    if calibration is None or isinstance(calibration, Mapping):
        raise ConfigError("calibration", type(calibration).__name__ if calibration is not None else None, f"{_EXPECTED}, for {who}")
    batches = [as_model_inputs(batch) for batch in itertools.islice(iter(calibration), limit)]
    if not batches:
        raise ConfigError("calibration", "no batches", f"at least one batch for {who}: it measures the inputs of every layer")
    return batches
