"""Per-step experiment log: loss, learning rate, target and counted sparsity, parameters and MACs, as CSV and TensorBoard."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneaware import measure
from pruneaware.core.driver import Pruner

log = logging.getLogger(__name__)
COLUMNS = ["step", "loss", "lr", "target_sparsity", "sparsity", "parameters", "macs"]


class StepLog:
    """Rows every ``every`` steps into ``steps.csv``; MACs are recounted only when the parameter count changes (channel removal)."""

    def __init__(self, path: Path, tensorboard_dir: Path | None, every: int, example_input: torch.Tensor):
        self.path, self.every = path, every
        self.example = example_input[:1]
        self._tensorboard_dir = tensorboard_dir
        self._writer: Any = None
        self._stream: Any = None
        self._csv: Any = None
        self._parameters, self._macs = -1, 0

    def start(self, resumed_step: int) -> None:
        """Keep the rows up to the checkpoint a run resumes from (later ones are trained again), and open the writers."""
        rows = []
        if self.path.is_file():
            with open(self.path, newline="") as stream:
                rows = [row for row in csv.DictReader(stream) if int(row["step"]) <= resumed_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.path, "w", newline="")  # noqa: SIM115 - open for the whole phase, closed by close()
        self._csv = csv.DictWriter(self._stream, fieldnames=COLUMNS)
        self._csv.writeheader()
        self._csv.writerows(rows)
        self._writer = _tensorboard(self._tensorboard_dir, resumed_step)

    def record(self, step: int, loss: float, lr: float, model: nn.Module, pruner: Pruner | None) -> None:
        if step % self.every:
            return
        parameters = measure.count_parameters(model)
        if parameters != self._parameters:
            self._parameters, self._macs = parameters, measure.count_macs(model, self.example).dense
        summary = pruner.summary() if pruner is not None else None
        row = {
            "step": step,
            "loss": loss,
            "lr": lr,
            "target_sparsity": summary.target if summary else 0.0,
            "sparsity": summary.sparsity if summary else 0.0,
            "parameters": parameters,
            "macs": self._macs,
        }
        self._csv.writerow(row)
        self._stream.flush()  # an interrupted run keeps its log up to the last step
        if self._writer is not None:
            for name, value in row.items():
                if name != "step":
                    self._writer.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tensorboard(directory: Path | None, resumed_step: int) -> Any:
    """A SummaryWriter when ``tensorboard`` is installed (the 'logs' extra); events after ``resumed_step`` are purged."""
    if directory is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed; per-step logs go to CSV only (pip install 'pruneaware[logs]')")
        return None
    return SummaryWriter(str(directory), purge_step=resumed_step + 1 if resumed_step else None)
