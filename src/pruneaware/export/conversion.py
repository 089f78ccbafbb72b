"""What converting layers to sparse kernels shares: per-layer decisions, the report, input recording, swapping modules."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pruneaware.core.errors import UsageError
from pruneaware.structured.graph import preserved_modes


@dataclass(frozen=True)
class LayerDecision:
    """One layer's outcome: converted to ``kernel`` or kept dense, with the reason and the measured speedup."""

    name: str
    layer_type: str
    sparsity: float
    kernel: str | None
    reason: str
    speedup: float | None = None
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    """Median ms of the dense layer and of each kernel that was timed, on the layer's recorded input."""

    @property
    def converted(self) -> bool:
        """Whether the layer was replaced by a sparse one."""
        return self.kernel is not None

    def line(self) -> str:
        """One line for people: 'fc1 (Linear, 90.0% zeros): csr/mm, measured 2.31x'."""
        head = f"{self.name} ({self.layer_type}, {self.sparsity:.1%} zeros)"
        if self.converted:
            return f"{head}: {self.kernel}, {self.reason}"
        return f"{head}: kept dense because {self.reason}"


@dataclass(frozen=True)
class ConversionReport:
    """The converted model and a decision for every layer considered, in module order."""

    model: nn.Module
    layers: tuple[LayerDecision, ...]

    @property
    def converted(self) -> tuple[LayerDecision, ...]:
        """The decisions that replaced a layer."""
        return tuple(decision for decision in self.layers if decision.converted)

    def __str__(self) -> str:
        return "\n".join(decision.line() for decision in self.layers)


def weight_sparsity(weight: Tensor) -> float:
    """Share of exactly-zero elements, counted from the weight."""
    return 1.0 - int(torch.count_nonzero(weight.detach())) / max(weight.numel(), 1)


def as_inputs(example_inputs: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    """The example inputs as a tuple of tensors; a clear error otherwise."""
    inputs = (example_inputs,) if isinstance(example_inputs, Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(x, Tensor) for x in inputs):
        raise UsageError("example_inputs must be a tensor or a non-empty sequence of tensors")
    return inputs


@contextmanager
def _first_inputs(layers: Mapping[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """Collect the first positional input each layer receives while the block runs."""
    seen: dict[str, Tensor] = {}
    handles = []
    for name, layer in layers.items():

        def record(module: nn.Module, args: tuple, name: str = name) -> None:
            if name not in seen and args and isinstance(args[0], Tensor):
                seen[name] = args[0].detach().clone()

        handles.append(layer.register_forward_pre_hook(record))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def record_inputs(model: nn.Module, layers: Mapping[str, nn.Module], inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """Each layer's real input from one eval-mode forward of ``model`` on ``inputs`` (layers that did not run are absent)."""
    with preserved_modes(model), torch.no_grad(), _first_inputs(layers) as seen:
        model.eval()
        model(*inputs)
    return seen


def replace_modules(model: nn.Module, replacements: Mapping[nn.Module, nn.Module]) -> None:
    """Swap every reference to each key module (shared modules included) for its replacement."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if child in replacements:
                setattr(parent, child_name, replacements[child])
