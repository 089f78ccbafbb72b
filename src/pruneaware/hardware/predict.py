"""Predicted latency of a model at its current widths, from its latency table."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from pruneaware.core.errors import ConfigError
from pruneaware.hardware.layers import layer_widths
from pruneaware.hardware.table import LatencyTable

Widths = Mapping[str, tuple[int, int]]


def widths_of(model: nn.Module, table: LatencyTable) -> dict[str, tuple[int, int]]:
    """(input, output) widths of every layer the table times, read from ``model`` (same module names)."""
    modules = dict(model.named_modules())
    missing = [name for name in table.contexts if name not in modules]
    if missing:
        raise ConfigError("latency table", missing[:3], "a table of this model: it times layers the model lacks; rebuild it for this model")
    return {name: layer_widths(modules[name]) for name in table.contexts}


def predict_widths(table: LatencyTable, widths: Widths) -> float:
    """Sum of the layers' latencies at ``widths`` plus the rest of the model (norms, activations, pooling, attention
    products, per-call overhead): a fixed part and a part scaled by the layer outputs left."""
    layers = sum(table.layer_ms(name, i, o) for name, (i, o) in widths.items())
    return layers * table.layer_scale() + table.rest_fixed_ms + table.rest_per_output_ms() * table.outputs(widths)


def predict_latency(model: nn.Module, table: LatencyTable) -> float:
    """Predicted milliseconds of one forward of ``model`` at the table's batch, backend and device."""
    return predict_widths(table, widths_of(model, table))
