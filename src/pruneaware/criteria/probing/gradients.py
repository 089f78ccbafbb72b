"""Gradients and Hessian-vector products of the calibration loss, without touching ``param.grad``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.calibration import Calibration


def summed_gradients(model: nn.Module, params: Sequence[Tensor], calibration: Calibration, batches: Sequence[Any]) -> list[Tensor]:
    """dL/dw summed over ``batches`` (zero for a parameter the loss does not use)."""
    total = [torch.zeros_like(param) for param in params]
    for batch in batches:
        grads = torch.autograd.grad(calibration.loss(model, batch), params, allow_unused=True, materialize_grads=True)
        for accumulated, grad in zip(total, grads):
            accumulated.add_(grad)
    return total


def hessian_vector_products(
    model: nn.Module, params: Sequence[Tensor], calibration: Calibration, batches: Sequence[Any], vectors: Sequence[Tensor]
) -> list[Tensor]:
    """H v summed over ``batches``, by differentiating the inner product of the gradient with ``v`` (double backprop)."""
    total = [torch.zeros_like(param) for param in params]
    for batch in batches:
        grads = torch.autograd.grad(calibration.loss(model, batch), params, create_graph=True, allow_unused=True, materialize_grads=True)
        inner = sum((grad * vector).sum() for grad, vector in zip(grads, vectors))
        if not inner.requires_grad:  # the loss is linear in every parameter: H = 0
            continue
        products = torch.autograd.grad(inner, params, allow_unused=True, materialize_grads=True)
        for accumulated, product in zip(total, products):
            accumulated.add_(product)
    return total
