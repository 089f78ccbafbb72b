"""A latency table: per layer context, milliseconds over sampled widths, interpolated between them; saved as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pruneaware.core.errors import ConfigError
from pruneaware.hardware.keys import TableKey
from pruneaware.hardware.layers import LayerContext


@dataclass
class Sweep:
    """One layer context's latency: over output widths (input full) and over input widths (output full)."""

    full_ms: float
    out: list[tuple[int, float]]
    inp: list[tuple[int, float]] = field(default_factory=list)

    def ms(self, in_width: int, out_width: int, context: LayerContext) -> float:
        """Predicted latency at these widths: the two sweeps combined multiplicatively (cost scales like in x out)."""
        by_out = _interp(self.out, out_width)
        if context.depthwise or not self.inp:
            return by_out
        return by_out * _interp(self.inp, in_width) / self.full_ms


def _interp(points: list[tuple[int, float]], width: int) -> float:
    widths, times = zip(*sorted(points))
    if width <= widths[0]:  # below the narrowest sample: proportional to width (never negative)
        return times[0] * width / widths[0]
    return float(np.interp(width, widths, times))


@dataclass
class LatencyTable:
    """Per timed layer (by module name) its context and sweep, the dense model's measured latency, and the key it holds for."""

    key: TableKey
    contexts: dict[str, LayerContext]
    sweeps: dict[str, Sweep]
    """By context signature: equal contexts (repeated blocks) share a sweep."""
    dense_ms: float
    """Measured end-to-end latency of the dense model on the backend."""
    per_channel: dict[str, int]
    """Each layer's output elements per channel and sample: scales the remainder (norms, activations, pooling)."""
    others_load: float | None = None
    """Share of the machine's CPU that other processes used while the table was measured (None: not known)."""
    speed_drift: float | None = None
    """Relative change of the dense model's latency between the start and the end of the build (None: not measured)."""
    rest_fixed_ms: float = 0.0
    """The part of the rest of the model (norms, activations, pooling, per-call overhead) that does not shrink with the
    widths, fitted from a slimmer copy of the model timed at build time (0: all of the rest scales with the outputs)."""

    def layer_ms(self, name: str, in_width: int, out_width: int) -> float:
        context = self.contexts[name]
        return self.sweeps[context.signature()].ms(in_width, out_width, context)

    def sweep(self, name: str) -> Sweep:
        return self.sweeps[self.contexts[name].signature()]

    def dense_layers_ms(self) -> float:
        return sum(self.layer_ms(n, c.in_full, c.out_full) for n, c in self.contexts.items())

    def outputs(self, widths: Mapping[str, tuple[int, int]] | None = None) -> int:
        """Output elements per sample of the timed layers at ``widths`` (default: every layer at full width)."""
        return sum(self.per_channel[n] * (c.out_full if widths is None else widths[n][1]) for n, c in self.contexts.items())

    def layer_scale(self) -> float:
        """Factor on the layers' times: where the layers timed alone add up to more than the model, scaled down to it."""
        dense_layers = self.dense_layers_ms()
        return self.dense_ms / dense_layers if dense_layers >= self.dense_ms else 1.0

    def rest_per_output_ms(self) -> float:
        """Milliseconds of the rest of the model per layer output element: the part of the rest that shrinks with the widths."""
        dense_rest = max(self.dense_ms - self.dense_layers_ms() - self.rest_fixed_ms, 0.0)
        return dense_rest / max(self.outputs(), 1)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "key": asdict(self.key),
            "contexts": {name: asdict(c) for name, c in self.contexts.items()},
            "sweeps": {sig: asdict(s) for sig, s in self.sweeps.items()},
            "dense_ms": self.dense_ms,
            "per_channel": self.per_channel,
            "others_load": self.others_load,
            "speed_drift": self.speed_drift,
            "rest_fixed_ms": self.rest_fixed_ms,
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path, wanted: TableKey | None = None) -> LatencyTable:
        """Read a saved table; with ``wanted``, refuse one measured under another key (naming the keys that differ)."""
        try:
            data = json.loads(Path(path).read_text())
            key = TableKey(**data["key"])
            contexts = {n: _context(c) for n, c in data["contexts"].items()}
            sweeps = {sig: Sweep(s["full_ms"], [tuple(p) for p in s["out"]], [tuple(p) for p in s["inp"]]) for sig, s in data["sweeps"].items()}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError("latency table", str(path), f"a table saved by pruneaware.hardware ({type(error).__name__}: {error})") from None
        if wanted is not None:
            key.check_matches(wanted, str(path))
        per_channel = {n: int(v) for n, v in data["per_channel"].items()}
        return cls(key, contexts, sweeps, float(data["dense_ms"]), per_channel, data.get("others_load"), data.get("speed_drift"),
                   float(data.get("rest_fixed_ms", 0.0)))


def _context(fields: dict) -> LayerContext:
    for name in ("inner_shape", "kernel", "stride", "dilation"):
        fields[name] = tuple(fields[name])
    if isinstance(fields["padding"], list):
        fields["padding"] = tuple(fields["padding"])
    return LayerContext(**fields)
