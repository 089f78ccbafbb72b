"""Inference-only Linear and convolution layers whose weight is stored sparse (CSR, COO or BSR) for CPU speed.

The weight lives in the state dict as its parts (``weight_values``, ``weight_crow_indices``,
``weight_col_indices``, or ``weight_indices`` for COO) next to a dense ``bias``, so the layers
deepcopy, pickle, move with ``.to()`` and save like any module; the sparse tensor itself is
assembled from those parts on first use and cached. The layers have no parameters and refuse to
run where gradients are wanted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneaware.core.errors import UsageError
from pruneaware.export.sparse_kernels import Kernel, assemble, compress, product

PREFIX = "weight_"


class SparseLayer(nn.Module):
    """Shared storage of the sparse weight matrix (out, in * kernel), its cache, and the inference-only guard."""

    def __init__(self, matrix: Tensor, bias: Tensor | None, kernel: Kernel, weight_shape: tuple[int, ...]):
        super().__init__()
        self.kernel = kernel
        self.weight_shape = weight_shape
        self.matrix_shape = (int(matrix.shape[0]), int(matrix.shape[1]))
        for part, tensor in compress(matrix, kernel).items():
            self.register_buffer(PREFIX + part, tensor)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._cache: tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None = None

    def _parts(self) -> dict[str, Tensor]:
        return {name[len(PREFIX):]: tensor for name, tensor in self._buffers.items() if name.startswith(PREFIX)}

    def matrix(self) -> tuple[Tensor, ...]:
        """The sparse weight matrix as column slices (one unless ``csr-split``), rebuilt only when a part was
        replaced (``.to()``, ``load_state_dict``)."""
        parts = self._parts()
        current = tuple(parts.values())
        if self._cache is None or any(a is not b for a, b in zip(self._cache[0], current)):
            self._cache = (current, assemble(parts, self.matrix_shape, self.kernel))
        return self._cache[1]

    def dense_weight(self) -> Tensor:
        """The weight as a dense tensor of the original layer's shape."""
        return torch.cat([part.to_dense() for part in self.matrix()], dim=1).reshape(self.weight_shape)

    def _refuse_gradients(self, inputs: Tensor) -> None:
        if not torch.is_grad_enabled():
            return
        if self.training or inputs.requires_grad:
            why = "the layer is in training mode" if self.training else "its input requires grad"
            raise UsageError(
                f"{type(self).__name__} runs inference only and cannot give gradients ({why}, with grad enabled): "
                "call model.eval() and run under torch.no_grad() or torch.inference_mode(); to train, train the "
                "dense model and convert it again with pruneaware.export.to_sparse"
            )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_cache"] = None  # sparse CSR/BSR tensors cannot be deep-copied or pickled; the parts can
        return state

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Take the saved parts at their saved sizes: another pruning of the same layer has another nonzero count."""
        for name, tensor in self._parts().items():
            saved = state_dict.get(prefix + PREFIX + name)
            if isinstance(saved, Tensor) and saved.dim() == tensor.dim() and saved.shape != tensor.shape:
                self._buffers[PREFIX + name] = torch.empty(saved.shape, dtype=tensor.dtype, device=tensor.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        nonzeros = int(self._buffers[PREFIX + "values"].count_nonzero())
        total = self.matrix_shape[0] * self.matrix_shape[1]
        return f"{self.kernel.name}, weight {tuple(self.weight_shape)}, {1 - nonzeros / total:.1%} zeros"


class SparseLinear(SparseLayer):
    """``nn.Linear`` for inference with a sparse weight: ``y = x W^T + b`` computed as ``(W x^T)^T``."""

    @classmethod
    def from_dense(cls, layer: nn.Linear, kernel: Kernel) -> SparseLinear:
        """The same layer with its weight stored for ``kernel``; the train/eval flag is kept."""
        converted = cls(layer.weight, layer.bias, kernel, tuple(layer.weight.shape))
        return converted.train(layer.training)

    def forward(self, inputs: Tensor) -> Tensor:
        self._refuse_gradients(inputs)
        rows = inputs.reshape(-1, self.matrix_shape[1])
        outputs = product(self.matrix(), rows.t(), self.bias, self.kernel).t()
        return outputs.reshape(*inputs.shape[:-1], self.matrix_shape[0])


class SparseConv(SparseLayer):
    """``nn.Conv1d`` / ``nn.Conv2d`` (groups 1, zero padding) for inference: unfolded patches times the sparse weight.

    A Conv1d runs as a Conv2d of height 1, so the geometry is held as pairs.
    """

    def __init__(
        self,
        matrix: Tensor,
        bias: Tensor | None,
        kernel: Kernel,
        weight_shape: tuple[int, ...],
        geometry: dict[str, tuple[int, int]],
    ):
        super().__init__(matrix, bias, kernel, weight_shape)
        self.spatial_dims = len(weight_shape) - 2
        self.kernel_size = geometry["kernel_size"]
        self.stride = geometry["stride"]
        self.padding = geometry["padding"]
        self.dilation = geometry["dilation"]

    @classmethod
    def from_dense(cls, layer: nn.Conv1d | nn.Conv2d, kernel: Kernel) -> SparseConv:
        """The same convolution with its weight stored for ``kernel``; the train/eval flag is kept."""
        weight = layer.weight
        lead = 4 - weight.dim()  # Conv1d: one leading height dimension
        geometry = {
            name: (0 if name == "padding" else 1,) * lead + tuple(getattr(layer, name))
            for name in ("kernel_size", "stride", "padding", "dilation")
        }
        converted = cls(weight.reshape(weight.shape[0], -1), layer.bias, kernel, tuple(weight.shape), geometry)
        return converted.train(layer.training)

    def forward(self, inputs: Tensor) -> Tensor:
        self._refuse_gradients(inputs)
        if inputs.dim() != self.spatial_dims + 2:
            raise UsageError(
                f"{type(self).__name__} takes batched input of {self.spatial_dims + 2} dimensions, got shape "
                f"{tuple(inputs.shape)}"
            )
        images = inputs.unsqueeze(2) if self.spatial_dims == 1 else inputs
        patches = F.unfold(images, self.kernel_size, self.dilation, self.padding, self.stride)
        batch, depth, positions = patches.shape
        columns = patches.transpose(0, 1).reshape(depth, batch * positions)
        outputs = product(self.matrix(), columns, self.bias, self.kernel)
        outputs = outputs.reshape(self.matrix_shape[0], batch, positions).transpose(0, 1)
        size = [
            (images.shape[2 + i] + 2 * self.padding[i] - self.dilation[i] * (self.kernel_size[i] - 1) - 1)
            // self.stride[i]
            + 1
            for i in range(2)
        ]
        return outputs.reshape(batch, self.matrix_shape[0], *size[2 - self.spatial_dims:])
