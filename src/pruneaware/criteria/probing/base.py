"""Criteria that measure the model itself at each mask update instead of watching training steps."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from pruneaware.criteria import Criterion
from pruneaware.core.errors import ConfigError, UsageError
from pruneaware.core.calibration import Calibration, untouched


def positive_int(option: str, value: object) -> int:
    """``value`` as a count >= 1, or a ConfigError naming the criterion option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"pruning.criterion_options.{option}", value, "a whole number >= 1")
    return value


class ProbingCriterion(Criterion):
    """Scores come from ``measure`` on the model as it is at the update; the model is left as found."""

    def __init__(self) -> None:
        self.scores: dict[str, Tensor] = {}

    def measure(self, model: nn.Module, params: Mapping[str, nn.Parameter], calibration: Calibration) -> dict[str, Tensor]:
        """Element-wise scores of every parameter in ``params`` (higher means keep)."""
        raise NotImplementedError

    def calibrate(self, model: nn.Module, params: Mapping[str, nn.Parameter], calibration: Calibration) -> None:
        with untouched(model):
            self.scores = {name: score.detach() for name, score in self.measure(model, params, calibration).items()}

    def score(self, name: str, param: Tensor) -> Tensor:
        if name not in self.scores:
            raise UsageError(f"criterion {type(self).__name__} has not measured {name!r}; the Pruner calibrates it at each update")
        return self.scores[name]

    def after_prune(self) -> None:
        self.scores = {}
