"""Which parameter elements belong to each channel of a coupled group, as differentiable row slices.

A Torch-Pruning group lists every layer a channel removal touches (the layer's outputs, the norm
after it, the inputs of the layers that read it) with the indices it removes there. Seen as a
(channels, elements) matrix — a conv's filters, a linear layer's columns, a norm's per-channel
scale — each of those indices is one row. Summing any element-wise quantity over a channel's rows
gives that channel's group score (importance) or group norm (regularizers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

_F = tp.pruner.function
_OUT_HANDLERS = (
    _F.prune_conv_out_channels,
    _F.prune_depthwise_conv_out_channels,
    _F.prune_linear_out_channels,
    _F.prune_batchnorm_out_channels,
    _F.prune_layernorm_out_channels,
    _F.prune_groupnorm_out_channels,
    _F.prune_instancenorm_out_channels,
    _F.prune_prelu_out_channels,
)
_IN_HANDLERS = (_F.prune_conv_in_channels, _F.prune_linear_in_channels)
_PER_CHANNEL_MODULES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.PReLU)


def channel_matrix(module: nn.Module, name: str, tensor: Tensor, out: bool) -> Tensor | None:
    """``tensor`` (shaped like ``module.<name>``) as (channels, elements): row i is what channel i owns.

    ``out`` selects the module's output channels, else its input channels. None where the
    parameter has no per-channel layout on that side (a bias on the input side, unknown layers).
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        if name == "bias":
            return tensor.reshape(-1, 1) if out else None
        if module.transposed:  # weight (in, out / groups, *kernel)
            if module.groups != 1:
                return None
            return (tensor.transpose(0, 1) if out else tensor).flatten(1)
        if out:
            return tensor.flatten(1)
        if module.groups == 1:
            return tensor.transpose(0, 1).flatten(1)
        # grouped: input channel g * per_group + j feeds column j of the filters of group g
        groups, (outputs, per_group) = module.groups, tensor.shape[:2]
        return tensor.reshape(groups, outputs // groups, per_group, -1).transpose(1, 2).reshape(groups * per_group, -1)
    if isinstance(module, nn.Linear):
        if name == "bias":
            return tensor.reshape(-1, 1) if out else None
        return tensor if out else tensor.t()
    if isinstance(module, _PER_CHANNEL_MODULES) and out and tensor.dim() == 1:
        return tensor.reshape(-1, 1)
    return None


@dataclass(frozen=True)
class ChannelSlice:
    """Rows ``rows`` of ``module.<name>``'s channel matrix belong to the channels numbered ``channels``."""

    module: nn.Module
    name: str
    out: bool
    rows: Tensor
    channels: Tensor
    param: nn.Parameter
    """The parameter object when the slice was built; a different one means a removal made it stale."""

    def row_sums(self, tensor: Tensor) -> Tensor:
        """Per covered row, the sum of ``tensor`` (shaped like the parameter) over the row's elements."""
        return channel_matrix(self.module, self.name, tensor, self.out).sum(1)[self.rows]  # type: ignore[union-attr]


def group_slices(group: Any, first_channel: int = 0) -> list[ChannelSlice]:
    """The parameter slices of every layer in ``group`` (conv, linear, norms; other layers are skipped).

    The group's channels are numbered from ``first_channel`` in the order of its root indices, so a
    group built for a subset of channels (the next ones to remove) is sliced the same way as a full one.
    """
    position = {root: first_channel + i for i, root in enumerate(group[0].root_idxs)}
    slices: list[ChannelSlice] = []
    for item in group:
        dep, module = item.dep, item.dep.target.module
        if dep.handler in _OUT_HANDLERS:
            out = True
        elif dep.handler in _IN_HANDLERS:
            out = False
        else:
            continue
        pairs = [(index, position[root]) for index, root in zip(item.idxs, item.root_idxs) if root in position]
        if not pairs:
            continue
        for name, param in module.named_parameters(recurse=False):
            matrix = channel_matrix(module, name, param.detach(), out)
            if matrix is None or matrix.shape[0] <= max(index for index, _ in pairs):
                continue
            rows, channels = (torch.tensor(column, device=param.device) for column in zip(*pairs))
            slices.append(ChannelSlice(module, name, out, rows, channels, param))
    return slices


class ChannelLayout:
    """The channels of some coupled groups, numbered group after group, and the parameter rows each owns."""

    def __init__(self, groups: Iterable[Any]):
        self.slices: list[ChannelSlice] = []
        self.sizes: list[int] = []
        for group in groups:
            slices = group_slices(group, first_channel=sum(self.sizes))
            if slices:
                self.slices.extend(slices)
                self.sizes.append(len(group[0].idxs))
        self.channels = sum(self.sizes)
        self._owners = torch.cat([piece.channels for piece in self.slices]) if self.slices else None

    def group_ids(self) -> Tensor:
        """For each channel, the index of its group."""
        sizes = torch.tensor(self.sizes, dtype=torch.long)
        return torch.repeat_interleave(torch.arange(len(self.sizes)), sizes).to(self._device())

    def sums(self, values: Callable[[nn.Parameter], Tensor]) -> Tensor:
        """Per channel, the sum of ``values(param)`` (element-wise, shaped like the parameter) over all its rows.

        ``values`` runs once per parameter; the result is differentiable when ``values`` is.
        """
        total = torch.zeros(self.channels, device=self._device())
        if self._owners is None:
            return total
        computed: dict[nn.Parameter, Tensor] = {}
        parts = []
        for piece in self.slices:
            if piece.param not in computed:
                computed[piece.param] = values(piece.param)
            parts.append(piece.row_sums(computed[piece.param]))
        return total.index_add(0, self._owners, torch.cat(parts).float())

    def is_stale(self) -> bool:
        """True once a channel removal has replaced any parameter the layout was built for."""
        return any(getattr(piece.module, piece.name) is not piece.param for piece in self.slices)

    def _device(self) -> torch.device | None:
        return self.slices[0].param.device if self.slices else None
