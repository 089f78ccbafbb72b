"""A slimmer copy of the model, timed right after the dense one, splits the rest of the model (norms, activations,
pooling, per-call overhead) into a part that does not shrink with the widths and a part that does."""

from __future__ import annotations

import copy
import logging

from torch import Tensor, nn

from pruneaware.core.errors import ConfigError
from pruneaware.core.scope import last_module_of_type
from pruneaware.hardware.layers import TIMED
from pruneaware.hardware.predict import widths_of
from pruneaware.hardware.table import LatencyTable

log = logging.getLogger(__name__)

PROBE_REMOVAL = 0.4
"""Share of every layer's channels the probe removes: far enough from dense to separate the two parts of the rest."""


def uniform_probe(model: nn.Module, inputs: Tensor, round_to: int, removal: float = PROBE_REMOVAL) -> nn.Module | None:
    """An eval-mode copy of ``model`` with ``removal`` of every layer's channels removed (the last layer's outputs
    kept), or None where the model cannot be traced for channel removal."""
    from pruneaware.schedules import OneShot
    from pruneaware.structured.channels import ChannelPruner

    probe = copy.deepcopy(model).eval()
    classifier = last_module_of_type(probe, tuple(t.__name__ for t in TIMED))
    try:
        ChannelPruner(probe, inputs[:1], OneShot(removal, 0), allocation="uniform", round_to=round_to,
                      ignored=[classifier] if classifier is not None else []).update(0)
    except ConfigError as error:
        log.info("latency table: no slim probe (%s); the rest of the model is scaled by the layer outputs left", error)
        return None
    return probe


def fixed_rest_ms(table: LatencyTable, probe: nn.Module, probe_ms: float) -> float:
    """The part of the rest that stays at every width: with the rest = fixed + per-output x outputs left, the one
    value of ``fixed`` that predicts both the dense model (the table's ``dense_ms``) and the probe (``probe_ms``)
    exactly, kept within [0, the dense rest]."""
    dense_rest = table.dense_ms - table.dense_layers_ms()
    if dense_rest <= 0:
        return 0.0
    widths = widths_of(probe, table)
    left = table.outputs(widths) / table.outputs()
    if left > 0.95:  # the probe kept (almost) everything: nothing to tell the two parts apart
        return 0.0
    probe_rest = probe_ms - sum(table.layer_ms(n, i, o) for n, (i, o) in widths.items())
    per_output = (dense_rest - probe_rest) / (1 - left)
    return min(max(dense_rest - per_output, 0.0), dense_rest)
