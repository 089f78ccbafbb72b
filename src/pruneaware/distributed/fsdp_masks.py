"""Masks of parameters sharded by FSDP2 (``fully_shard``): each rank holds the mask of its own shard only.

A mask is a plain boolean tensor shaped like the parameter's local shard (``param.to_local()``);
weights and gradients are masked in place on the shards, so no step gathers a full weight. In a
checkpoint a mask is a DTensor with its parameter's mesh and placements, so
``torch.distributed.checkpoint`` saves it sharded and re-shards it for another world size.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from pruneaware.distributed.world import collective_device
from pruneaware.core.errors import StateError
from pruneaware.core.masks import MaskSet


def local(tensor: Tensor) -> Tensor:
    """The local shard of a DTensor (a view: writing to it writes the parameter); a plain tensor as is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def like_param(local_tensor: Tensor, param: DTensor) -> DTensor:
    """``local_tensor`` (shaped like ``param``'s shard) as a DTensor sharded as ``param`` is."""
    return DTensor.from_local(local_tensor, param.device_mesh, param.placements, run_check=False, shape=param.shape, stride=param.stride())


class ShardedMaskSet(MaskSet):
    """MaskSet whose masks are local shards of DTensor parameters; counts and checkpoints span all ranks."""

    def __init__(self, params: Mapping[str, nn.Parameter], *, keep_zeros: bool = True):
        self.params = dict(params)
        with torch.no_grad():
            self.masks = {
                name: (local(p.detach()) != 0) if keep_zeros else torch.ones_like(local(p), dtype=torch.bool) for name, p in self.params.items()
            }
        self.shadows = None
        self._refresh_multipliers()

    def _refresh_multipliers(self) -> None:
        """As MaskSet, on the shards: a rank whose shard of a layer keeps everything skips it (no collective involved)."""
        self._names = [name for name, mask in self.masks.items() if not bool(mask.all())]
        self._any_pruned = bool(self._names)
        self._weights = [self.params[name] for name in self._names]
        self._multipliers = [self.masks[name].to(self.params[name].dtype) for name in self._names]

    def update(self, new_masks: Mapping[str, Tensor]) -> None:
        """Replace the local masks named in ``new_masks`` (shaped like the local shards) and zero the newly pruned weights."""
        for name, mask in new_masks.items():
            if name not in self.params:
                raise StateError(f"mask for unknown parameter {name!r}; known: {sorted(self.params)}")
            if local(mask).shape != local(self.params[name]).shape:
                raise StateError(f"mask for {name!r} has shape {tuple(local(mask).shape)}, its shard has {tuple(local(self.params[name]).shape)}")
        for name, mask in new_masks.items():
            self.masks[name] = local(mask).to(dtype=torch.bool)
        self._refresh_multipliers()
        self.apply_()

    @torch.no_grad()
    def apply_(self) -> None:
        if self._any_pruned:
            torch._foreach_mul_([local(w.data) for w in self._weights], self._multipliers)

    @torch.no_grad()
    def mask_gradients_(self) -> None:
        if not self._any_pruned:
            return
        pairs = [(local(w.grad), m) for w, m in zip(self._weights, self._multipliers) if w.grad is not None]
        if pairs:
            grads, multipliers = zip(*pairs)
            torch._foreach_mul_(list(grads), list(multipliers))

    def keep_shadows(self) -> None:
        raise StateError("splicing keeps dense shadow weights, which sharded (fully_shard) parameters do not support")

    def kept(self, name: str) -> int:
        """Weights kept in ``name`` over all ranks (a collective: every rank must call it)."""
        count = self.masks[name].sum().reshape(1).to(collective_device(), torch.int64)
        dist.all_reduce(count)
        return int(count)

    def sparsity(self) -> float:
        """Fraction of masked-out entries over all masked parameters and all ranks (one all_reduce)."""
        counts = [mask.sum() for mask in self.masks.values()]
        kept = (torch.stack(counts).sum().reshape(1) if counts else torch.zeros(1)).to(collective_device(), torch.int64)
        dist.all_reduce(kept)
        total = sum(param.numel() for param in self.params.values())
        return 1.0 - int(kept) / max(total, 1)

    def state_dict(self) -> dict[str, Tensor]:
        """Masks as DTensors sharded like their parameters (for torch.distributed.checkpoint)."""
        return {name: like_param(mask.clone(), self.params[name]) for name, mask in self.masks.items()}
