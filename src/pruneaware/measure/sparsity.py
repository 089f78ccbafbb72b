"""Sparsity summaries counted from the weights themselves, never echoed from a schedule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn
from torch.distributed.tensor import DTensor


@dataclass(frozen=True)
class LayerSparsity:
    """Zeros counted in one pruned parameter."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class Summary:
    """Per-layer and total sparsity of the pruned parameters, plus whole-model parameter counts."""

    layers: list[LayerSparsity]
    model_parameters: int
    model_nonzero: int
    target: float = 0.0

    @property
    def pruned_numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def pruned_nonzero(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over the parameters in the recipe's scope."""
        return 1.0 - self.pruned_nonzero / self.pruned_numel if self.pruned_numel else 0.0

    @property
    def model_sparsity(self) -> float:
        """Fraction of zeros over every parameter of the model (biases, norms and classifier included)."""
        return 1.0 - self.model_nonzero / self.model_parameters if self.model_parameters else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "sparsity": self.sparsity,
            "model_sparsity": self.model_sparsity,
            "model_parameters": self.model_parameters,
            "model_nonzero": self.model_nonzero,
            "layers": [{"name": l.name, "shape": list(l.shape), "numel": l.numel, "nonzero": l.nonzero, "sparsity": l.sparsity} for l in self.layers],
        }

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'shape':>18}  {'nonzero':>10}  {'sparsity':>8}"]
        for layer in self.layers:
            lines.append(f"{layer.name:<{width}}  {str(layer.shape):>18}  {layer.nonzero:>10,}  {layer.sparsity:>8.2%}")
        lines.append(f"{'in scope':<{width}}  {'':>18}  {self.pruned_nonzero:>10,}  {self.sparsity:>8.2%}  (target {self.target:.2%})")
        lines.append(f"{'model':<{width}}  {'':>18}  {self.model_nonzero:>10,}  {self.model_sparsity:>8.2%}  of {self.model_parameters:,} parameters")
        return "\n".join(lines)


def summarize(model: nn.Module, params: Mapping[str, nn.Parameter], target: float = 0.0) -> Summary:
    """Count zeros in ``params`` (the pruned scope) and in the whole ``model``."""
    layers = [
        LayerSparsity(name, tuple(param.shape), param.numel(), _nonzero(param))
        for name, param in params.items()
    ]
    unique = {id(p): p for p in model.parameters()}.values()
    return Summary(
        layers=layers,
        model_parameters=sum(p.numel() for p in unique),
        model_nonzero=sum(_nonzero(p) for p in unique),
        target=target,
    )


def _nonzero(param: Tensor) -> int:
    """Nonzero entries of ``param``; of all its shards for a DTensor (fully_shard), whose local sum is only this rank's part."""
    count = (param.detach() != 0).sum()
    return int(count.full_tensor() if isinstance(count, DTensor) else count)
