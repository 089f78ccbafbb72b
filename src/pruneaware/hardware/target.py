"""A latency budget for channel removal: stop once the model's predicted latency on the deployment backend reaches it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pruneaware.core.errors import ConfigError
from pruneaware.hardware.build import latency_table
from pruneaware.hardware.predict import predict_widths, widths_of
from pruneaware.hardware.table import LatencyTable

log = logging.getLogger(__name__)


@dataclass
class LatencyTarget:
    """Pruning stops once predicted latency is at most ``fraction`` of the dense model's, or at most ``ms`` milliseconds.

    Same interface as ``structured.target.ResourceTarget`` (``measure``, ``met``); the table is built (or
    loaded from the cache, or from ``table``) the first time the dense model is measured.
    """

    fraction: float | None = None
    ms: float | None = None
    backend: str = "torch"
    batch: int = 1
    threads: int | None = None
    table_path: str | None = None
    round_to: int = 8
    kind: str = "latency"
    table: LatencyTable | None = field(default=None, repr=False)

    def measure(self, model: nn.Module, example_inputs: Any) -> float:
        """Predicted milliseconds of one forward at the target's batch size on its backend."""
        if self.table is None:
            self.table = latency_table(model, example_inputs, backend=self.backend, batch=self.batch, round_to=self.round_to,
                                       threads=self.threads, path=self.table_path)
        return predict_widths(self.table, widths_of(model, self.table))

    def budget_ms(self, dense: float) -> float:
        return self.ms if self.ms is not None else self.fraction * dense

    def met(self, value: float, dense: float) -> bool:
        return value <= self.budget_ms(dense)

    def check_reachable(self, model: nn.Module, dense: float, max_layer_ratio: float, ignored: Sequence[nn.Module]) -> None:
        """Refuse a budget below what removing ``max_layer_ratio`` of every prunable layer's channels would reach."""
        assert self.table is not None
        modules = dict(model.named_modules())
        kept = set(map(id, ignored))
        widths = {}
        for name, (in_width, out_width) in widths_of(model, self.table).items():
            context = self.table.contexts[name]
            first = name == next(iter(self.table.contexts))  # the model's input channels are fixed
            floor = lambda width: max(1, math.ceil(width * (1 - max_layer_ratio)))  # noqa: E731
            out = out_width if id(modules[name]) in kept else floor(out_width)
            widths[name] = (out if context.depthwise else (in_width if first else floor(in_width)), out)
        reachable = predict_widths(self.table, widths)
        if self.budget_ms(dense) < reachable:
            wanted = f"latency {self.fraction:g}" if self.fraction is not None else f"latency_ms {self.ms:g}"
            raise ConfigError(
                "structured.target", wanted,
                f"a budget the removal can reach: at most about {reachable:.2f} ms ({reachable / dense:.2f} of dense "
                f"{dense:.2f} ms, {self.backend}, batch {self.batch}) with max_layer_ratio {max_layer_ratio:g}; raise the target or max_layer_ratio",
            )
