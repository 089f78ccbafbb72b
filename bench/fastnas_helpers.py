"""Pure helpers of ``bench/fastnas_compare.py``: the model, saving slim models as plain tensors, and summaries."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
import torchvision
from torch import nn


def build_resnet18(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """torchvision's ResNet-18 with ``num_classes`` outputs and a stem taking ``in_channels`` (MNIST: 1)."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def conv_widths(model: nn.Module) -> list[int]:
    """Output channels of every convolution, in order (the shape a pruning method chose)."""
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def save_slim(model: nn.Module, path: Path) -> None:
    """The model's tensors only (no pickled code): ``load_slim`` rebuilds the slim shapes from them."""
    torch.save({name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}, path)


def load_slim(path: Path, model: nn.Module) -> nn.Module:
    """``model`` (dense architecture) with every conv, batch norm and linear layer resized to the saved tensors, then loaded."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    resize_to(model, state)
    model.load_state_dict(state)
    return model.eval()


def resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Replace each Conv2d / BatchNorm2d / Linear whose saved weight has another shape by one of the saved shape."""
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or weight.shape == module.weight.shape:
            continue
        if isinstance(module, nn.Conv2d):
            new: nn.Module = nn.Conv2d(weight.shape[1] * module.groups, weight.shape[0], module.kernel_size, module.stride,
                                       module.padding, module.dilation, module.groups, module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(weight.shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        elif isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], weight.shape[0], module.bias is not None)
        else:
            raise ValueError(f"{name}: cannot resize a {type(module).__name__} to the saved shape {tuple(weight.shape)}")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)


def overhead_seconds(step_times: list[float]) -> float:
    """Seconds the steps took beyond a plain step (the median step): the pruning work done inside some of them."""
    if not step_times:
        return 0.0
    plain = statistics.median(step_times)
    return sum(max(t - plain, 0.0) for t in step_times)


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (std over seeds; 0 with one value), 3 significant digits."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3g} ± {spread:.2g}"
