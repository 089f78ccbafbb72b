"""A latency table: per layer context, milliseconds over sampled widths, interpolated between them; saved as JSON."""

from __future__ import annotations

import json
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

    def layer_ms(self, name: str, in_width: int, out_width: int) -> float:
        context = self.contexts[name]
        return self.sweeps[context.signature()].ms(in_width, out_width, context)

    def sweep(self, name: str) -> Sweep:
        return self.sweeps[self.contexts[name].signature()]

    def dense_layers_ms(self) -> float:
        return sum(self.layer_ms(n, c.in_full, c.out_full) for n, c in self.contexts.items())

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
        return cls(key, contexts, sweeps, float(data["dense_ms"]), per_channel, data.get("others_load"), data.get("speed_drift"))


def _context(fields: dict) -> LayerContext:
    for name in ("inner_shape", "kernel", "stride", "dilation"):
        fields[name] = tuple(fields[name])
    if isinstance(fields["padding"], list):
        fields["padding"] = tuple(fields["padding"])
    return LayerContext(**fields)
