"""What criteria that probe the model need: a few batches and a loss, or just the shape of an input.

SNIP, GraSP and OBD score weights from gradients of the loss on calibration batches taken before
any training step; SynFlow needs only the shape of one input. The Pruner holds one ``Calibration``
built from its ``calibration_data``, ``loss_fn`` and ``example_inputs`` arguments.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError

LossFn = Callable[[Any, Any], Tensor]


@dataclass(frozen=True)
class Calibration:
    """Batches of ``(inputs, targets)``, the loss on ``(model(inputs), targets)``, and example inputs."""

    data: Iterable[tuple[Any, Any]] | None = None
    loss_fn: LossFn | None = None
    example_inputs: Any = None

    def batches(self, criterion: str, count: int) -> list[tuple[Any, Any]]:
        """The first ``count`` batches (fewer if the data holds fewer); errors when there is no data or loss."""
        if self.data is None or self.loss_fn is None:
            missing = "calibration_data" if self.data is None else "loss_fn"
            raise ConfigError(
                missing,
                None,
                f"Pruner(..., calibration_data=<(inputs, targets) batches>, loss_fn=<loss(outputs, targets)>): "
                f"criterion {criterion!r} scores weights from the loss on data",
            )
        batches = list(itertools.islice(iter(self.data), count))
        if not batches:
            raise ConfigError("calibration_data", self.data, f"at least one (inputs, targets) batch for criterion {criterion!r}")
        return batches

    def loss(self, model: nn.Module, batch: tuple[Any, Any]) -> Tensor:
        """The loss of ``model`` on one ``(inputs, targets)`` batch; a mapping of inputs is passed as keyword arguments."""
        inputs, targets = batch
        outputs = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)  # a mapping holds keyword inputs (Hugging Face batches)
        return self.loss_fn(outputs, targets)

    def input_shape(self, criterion: str) -> torch.Size:
        """The shape of one input (batch dimension 1), from ``example_inputs`` or the first calibration batch."""
        inputs = self.example_inputs
        if inputs is None and self.data is not None:
            inputs = next(iter(self.data), (None, None))[0]
        if not isinstance(inputs, Tensor) or inputs.dim() < 1:
            raise ConfigError(
                "example_inputs",
                None if inputs is None else type(inputs).__name__,
                f"a batch tensor (or calibration_data of (inputs, targets)): criterion {criterion!r} needs the input shape",
            )
        return torch.Size((1, *inputs.shape[1:]))


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Restore buffers (BatchNorm statistics) and train/eval flags after probing forward passes."""
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in modes:
            module.train(training)
