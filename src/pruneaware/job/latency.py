"""A run's latency target checked at the end: the budget, each phase's predicted latency and its latency measured
on the target's backend, batch size and threads (the table's estimator: the fastest of interleaved forwards)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.hardware.backends import backend
from pruneaware.hardware.build import batched
from pruneaware.hardware.predict import predict_latency
from pruneaware.hardware.target import LatencyTarget

ROUNDS = 3
REPEATS = 10


@dataclass(frozen=True)
class LatencyCheck:
    """The budget in milliseconds and, per phase, predicted and measured milliseconds at the target's settings."""

    backend: str
    batch: int
    threads: int
    budget_ms: float
    dense_predicted_ms: float
    """The dense model's predicted latency, which a fractional budget is taken of."""
    predicted_ms: dict[str, float]
    measured_ms: dict[str, float]

    @property
    def met(self) -> bool:
        """Whether the pruned model's predicted latency is within the budget (removal stops as soon as it is)."""
        return self.predicted_ms["pruned"] <= self.budget_ms * (1 + 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "batch": self.batch, "threads": self.threads, "budget_ms": self.budget_ms, "met": self.met,
            "dense_predicted_ms": self.dense_predicted_ms, "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms,
        }


def latency_target_of(pruner: Any) -> LatencyTarget | None:
    """The latency target of a pruner's channel removal, or None when it has none (or no channel removal)."""
    for stage in getattr(pruner, "stages", ()):
        target = getattr(getattr(stage, "channels", None), "target", None)
        if isinstance(target, LatencyTarget) and target.table is not None:
            return target
    return None


def check_latency_target(target: LatencyTarget, models: Mapping[str, nn.Module], example: Tensor) -> LatencyCheck:
    """Predict and measure each model (same layer names as the table's) at the target's backend, batch and threads."""
    table = target.table
    assert table is not None
    runner = backend(target.backend)
    inputs = batched(example.detach().cpu(), target.batch)
    copies = {phase: copy.deepcopy(model).cpu().eval() for phase, model in models.items()}
    previous = torch.get_num_threads()
    torch.set_num_threads(table.key.threads)
    try:
        fastest = {phase: float("inf") for phase in copies}
        for _ in range(ROUNDS):  # interleaved, so a change in the machine's load falls on every model alike
            for phase, model in copies.items():
                fastest[phase] = min(fastest[phase], runner.time_ms(model, inputs, REPEATS))
    finally:
        torch.set_num_threads(previous)
    dense = table.dense_ms  # the prediction at full widths is the measured dense latency the table holds
    return LatencyCheck(
        backend=target.backend, batch=target.batch, threads=table.key.threads, budget_ms=target.budget_ms(dense), dense_predicted_ms=dense,
        predicted_ms={phase: predict_latency(model, table) for phase, model in copies.items()}, measured_ms=fastest,
    )
