"""What a latency table is valid for: the device, backend, library versions, batch, dtype and threads."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass

import torch

from pruneaware.core.errors import ConfigError


def cpu_name() -> str:
    """The processor's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def device_name(backend: str) -> str:
    """The device a backend runs on: the GPU's name for CUDA, the CPU's otherwise."""
    if backend == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return cpu_name()


@dataclass(frozen=True)
class TableKey:
    """Everything a measured latency depends on besides the layer itself; tables are cached and checked by it."""

    device: str
    backend: str
    versions: str
    batch: int
    dtype: str
    threads: int

    def digest(self) -> str:
        """A short stable hash naming this key's cache file."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, other: TableKey) -> dict[str, tuple[object, object]]:
        """Fields whose values differ, as ``{field: (mine, other's)}``."""
        mine, theirs = asdict(self), asdict(other)
        return {name: (mine[name], theirs[name]) for name in mine if mine[name] != theirs[name]}

    def check_matches(self, wanted: TableKey, source: str) -> None:
        """Refuse a table measured under other conditions, naming every key that differs."""
        differing = self.differences(wanted)
        if not differing:
            return
        if set(differing) == {"batch"}:
            raise ConfigError(
                "latency table batch", self.batch,
                f"a table for batch {wanted.batch}: {source} was measured at batch {self.batch}; build one with "
                f"pruneaware.hardware.build_table(model, inputs, batch={wanted.batch}) or omit the table to have it built",
            )
        described = ", ".join(f"{name}: table {mine!r} vs here {theirs!r}" for name, (mine, theirs) in differing.items())
        raise ConfigError("latency table", source, f"a table measured here; keys differ ({described}); rebuild it on this machine")
