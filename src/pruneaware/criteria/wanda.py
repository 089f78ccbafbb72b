"""The ``wanda`` criterion: |W| * ||X|| scores for any Pruner recipe, measured on the Pruner's calibration data at each update."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from pruneaware.criteria import CRITERIA
from pruneaware.core.errors import ConfigError
from pruneaware.llm.batches import calibration_inputs
from pruneaware.llm.blocks import calibration_mode
from pruneaware.llm.statistics import collect_statistics
from pruneaware.llm.wanda import wanda_scores
from pruneaware.criteria.probing.base import ProbingCriterion, positive_int
from pruneaware.core.calibration import Calibration


@CRITERIA.register("wanda")
class Wanda(ProbingCriterion):
    """Wanda's |W_ij| * ||X_j||_2 with X the inputs of each Linear over the first ``batches`` calibration batches.

    Inputs are measured on the model as it is at the update, in one pass (not block by block as
    ``pa.llm.wanda_prune``), and the recipe's granularity compares the scores: ``"2:4"`` is Wanda
    2:4; element granularity compares within a layer (or globally), not within each output row.
    """

    def __init__(self, batches: int = 8):
        super().__init__()
        self.batches = positive_int("batches", batches)

    def measure(self, model: nn.Module, params: Mapping[str, nn.Parameter], calibration: Calibration) -> dict[str, Tensor]:
        owners = {name: _linear_owner(model, name) for name in params}
        inputs = calibration_inputs(calibration.data, limit=self.batches, who="criterion 'wanda' (Pruner(..., calibration_data=...))")
        with calibration_mode(model), collect_statistics(owners, hessian=False) as hooks:
            for batch in inputs:
                hooks.token_mask = batch.token_mask
                batch.run(model)
        return {name: wanda_scores(param, hooks[name].feature_norms()) for name, param in params.items()}


def _linear_owner(model: nn.Module, name: str) -> nn.Linear:
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name)
    if not isinstance(module, nn.Linear) or attribute != "weight":
        raise ConfigError(
            "pruning.criterion", "wanda", f"Linear weights only ({name!r} is a {type(module).__name__}.{attribute}); set scope.modules: [Linear]"
        )
    return module
