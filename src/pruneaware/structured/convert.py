"""Swap layers Torch-Pruning cannot cut head by head for equivalent ones it can (outputs unchanged).

``nn.MultiheadAttention`` becomes :class:`PrunableMultiheadAttention` (separate q/k/v projections),
and the transposed-weight ``Conv1D`` of Hugging Face GPT-2 becomes ``nn.Linear``. Convert *before*
building the optimizer (the new layers hold new parameters) and *after* loading pretrained
weights (checkpoints saved afterwards hold the converted layout).
"""

from __future__ import annotations

import torch
from torch import nn

from pruneaware.structured.mha import PrunableMultiheadAttention


def is_transposed_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is Hugging Face's ``Conv1D`` (a Linear storing its weight as (in, out))."""
    return type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers")


def linear_from_conv1d(conv: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` computing what a Hugging Face ``Conv1D`` computes (weight transposed, same bias)."""
    weight = conv.weight
    linear = nn.Linear(conv.nx, conv.nf, bias=conv.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.t())
        linear.weight.requires_grad_(weight.requires_grad)
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
            linear.bias.requires_grad_(conv.bias.requires_grad)
    linear.train(conv.training)
    return linear


def convert_for_pruning(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.MultiheadAttention`` and Hugging Face ``Conv1D`` by its prunable equivalent.

    Returns ``model``. Build the optimizer afterwards: converted layers hold new parameters.
    """
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            qualified = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, nn.MultiheadAttention):
                setattr(parent, child_name, PrunableMultiheadAttention.from_multihead_attention(child, qualified))
            elif is_transposed_conv1d(child):
                setattr(parent, child_name, linear_from_conv1d(child))
    return model
