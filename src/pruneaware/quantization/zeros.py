"""Sparsity through quantization: masked weights must be exactly zero in the int8 model, and counted there."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneaware.core.errors import StateError
from pruneaware.quantization.convert import Int8Model


def check_zeros_kept(int8: Int8Model, masks: Mapping[str, Tensor]) -> None:
    """Raise StateError unless every masked-out weight (``mask == False``) dequantizes to exactly 0 in ``int8``.

    A weight the quantizer left in floating point is checked in the int8 model's state instead.
    """
    for name, keep in masks.items():
        weight = _int8_or_float_weight(int8, name)
        if weight.shape != keep.shape:
            raise StateError(f"the int8 weight of {name!r} has shape {tuple(weight.shape)}, its mask {tuple(keep.shape)}")
        leaked = int(torch.count_nonzero(weight[~keep.to(torch.bool)]))
        if leaked:
            raise StateError(f"{leaked} masked weights of {name!r} are nonzero in the int8 model; the sparsity was not preserved through QAT")


def int8_as_float(model: nn.Module, int8: Int8Model) -> nn.Module:
    """A copy of the fp32 ``model`` whose quantized weights hold the int8 values, dequantized.

    Float tools (sparsity summaries, the MAC counter) then count what the int8 model holds: masked
    zeros, plus any small weight that rounded to 0. Where a norm was folded into a convolution the
    copy holds the folded weight, so it is for counting, not for inference.
    """
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for name, weight in int8.weights.items():
            param = copied.get_parameter(name)
            param.copy_(weight.dequantize().reshape(param.shape))
    return copied


def _int8_or_float_weight(int8: Int8Model, name: str) -> Tensor:
    if name in int8.weights:
        return int8.weights[name].dequantize()
    if name in int8.state:
        return int8.state[name]
    raise StateError(f"parameter {name!r} is neither an int8 weight nor a float tensor of the int8 model")
