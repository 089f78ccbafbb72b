"""What one-shot LLM pruning removes: a fraction of each layer's weights, or all but N of every M consecutive inputs."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pruneaware.core.errors import ConfigError
from pruneaware.granularity import NM
from pruneaware.schedules import check_sparsity


@dataclass(frozen=True)
class SparsityTarget:
    """``sparsity`` of every layer; with ``nm`` set, as N:M groups along the input dimension instead of freely."""

    sparsity: float
    nm: NM | None = None

    def check(self, name: str, weight: Tensor) -> None:
        """Raise ConfigError when ``weight`` cannot hold this pattern (N:M needs inputs divisible by M)."""
        if weight.dim() != 2:
            raise ConfigError(name, tuple(weight.shape), "a 2-D Linear weight (out_features, in_features)")
        if self.nm is not None:
            self.nm.check(name, weight)

    def __str__(self) -> str:
        return f"{self.nm.n}:{self.nm.m}" if self.nm is not None else f"{self.sparsity:.0%}"


def parse_target(value: float | str | SparsityTarget) -> SparsityTarget:
    """A fraction in [0, 1) for unstructured sparsity, or ``"N:M"`` (e.g. ``"2:4"``) for semi-structured."""
    if isinstance(value, SparsityTarget):
        return value
    if isinstance(value, str):
        n, colon, m = value.partition(":")
        if not (colon and n.strip().isdigit() and m.strip().isdigit()):
            raise ConfigError("sparsity", value, "a fraction in [0, 1) or 'N:M' with integers, e.g. '2:4'")
        nm = NM(int(n), int(m))  # raises ConfigError for N >= M or M < 2
        return SparsityTarget(nm.sparsity, nm)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("sparsity", value, "a fraction in [0, 1) or 'N:M' with integers, e.g. '2:4'")
    return SparsityTarget(check_sparsity("sparsity", float(value)))
