"""Top-k on sharded scores: every rank agrees on the same cut without any rank holding all the scores.

The ``R`` lowest scores of a group of layers (one layer, or all of them for a global ranking) are
found by a radix selection on the scores' order-preserving 32-bit keys: four rounds, each one
``all_reduce`` of a 256-bin histogram per group. Scores equal to the cut are removed in the order a
stable sort of the whole (unsharded) tensors would take them: layer order, then rank order (FSDP2
shards dim 0 into contiguous chunks, rank by rank), then position; one ``all_gather`` of tie counts
decides which rank removes how many. The result is exactly what ``Element.masks`` computes on the
gathered scores, on every world size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from pruneaware.distributed.world import collective_device
from pruneaware.core.errors import ConfigError

DIGIT_BITS = 8
BINS = 1 << DIGIT_BITS


def order_keys(scores: Tensor) -> Tensor:
    """int64 keys in [0, 2^32) ordered as the float32 scores are (-0.0 and 0.0 share a key, as they tie in a sort)."""
    bits = (scores.float().flatten() + 0.0).view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits + (1 << 31), -1 - bits)


def lowest_masks(local_scores: Sequence[Tensor], groups: Sequence[Sequence[int]], removals: Sequence[int], group_handle: object = None) -> list[Tensor]:
    """Keep-masks of this rank's shards: in each group (indices into ``local_scores``), the ``removals[g]`` lowest scores over all ranks are removed."""
    device = collective_device(group_handle)
    keys = [order_keys(score).to(device) for score in local_scores]
    group_of = {layer: g for g, members in enumerate(groups) for layer in members}
    prefix = torch.zeros(len(groups), dtype=torch.int64, device=device)
    remaining = torch.tensor([int(r) for r in removals], dtype=torch.int64, device=device)
    for shift in range(32 - DIGIT_BITS, -1, -DIGIT_BITS):
        histogram = torch.zeros(len(groups), BINS, dtype=torch.int64, device=device)
        high = shift + DIGIT_BITS
        for layer, key in enumerate(keys):
            g = group_of[layer]
            candidates = key[(key >> high) == (prefix[g] >> high)]
            histogram[g] += torch.bincount((candidates >> shift) & (BINS - 1), minlength=BINS)
        dist.all_reduce(histogram, group=group_handle)
        below = torch.cumsum(histogram, 1)
        # the digit where the remaining-th lowest candidate lies (remaining >= 1); groups removing nothing stay at 0
        digit = torch.searchsorted(below, remaining.clamp(min=1).unsqueeze(1)).squeeze(1).clamp(max=BINS - 1)
        before = torch.where(digit > 0, below.gather(1, (digit - 1).clamp(min=0).unsqueeze(1)).squeeze(1), torch.zeros_like(digit))
        active = remaining > 0
        remaining = torch.where(active, remaining - before, remaining)
        prefix = torch.where(active, prefix | (digit << shift), prefix)
    cut = prefix  # per group: the key of the last removed score; ``remaining`` of the scores equal to it go
    ties = torch.tensor([int((key == cut[group_of[layer]]).sum()) for layer, key in enumerate(keys)], dtype=torch.int64, device=device)
    gathered = [torch.zeros_like(ties) for _ in range(dist.get_world_size(group_handle))]
    dist.all_gather(gathered, ties, group=group_handle)
    table = torch.stack(gathered)  # (ranks, layers)
    rank = dist.get_rank(group_handle)
    masks = []
    for layer, key in enumerate(keys):
        g = group_of[layer]
        if int(removals[g]) == 0:
            masks.append(torch.ones_like(key, dtype=torch.bool).reshape(local_scores[layer].shape))
            continue
        # ties removed before this (layer, rank): earlier layers of the group on every rank, then lower ranks of this layer
        earlier = sum(int(table[:, m].sum()) for m in groups[g] if m < layer) + int(table[:rank, layer].sum())
        mine = max(0, min(int(table[rank, layer]), int(remaining[g]) - earlier))
        keep = key > cut[g]
        tied = torch.nonzero(key == cut[g]).flatten()
        keep[tied[mine:]] = True
        masks.append(keep.reshape(local_scores[layer].shape))
    return masks


def removal_counts(totals: Sequence[int], sparsities: Sequence[float], where: Sequence[str]) -> list[int]:
    """``round(sparsity * total)`` per group; a target that rounds to every weight of a group is refused as ``Element`` refuses it."""
    counts = []
    for total, sparsity, name in zip(totals, sparsities, where):
        remove = round(sparsity * total)
        if total and remove >= total:
            raise ConfigError(
                "sparsity", sparsity, f"a target that keeps at least one of the {total} weights of {name}; it rounds to all of them, lower it"
            )
        counts.append(remove)
    return counts


def sharded_element_masks(
    local_scores: Mapping[str, Tensor], global_shapes: Mapping[str, torch.Size], layer_sparsity: Mapping[str, float] | float, group_handle: object = None
) -> dict[str, Tensor]:
    """Element keep-masks of local shards: one global ranking (``layer_sparsity`` a float) or one per layer (a mapping)."""
    names = list(local_scores)
    numels = [int(torch.Size(global_shapes[name]).numel()) for name in names]
    if isinstance(layer_sparsity, Mapping):
        groups: list[list[int]] = [[i] for i in range(len(names))]
        removals = removal_counts(numels, [layer_sparsity[n] for n in names], [repr(n) for n in names])
    else:
        groups = [list(range(len(names)))]
        removals = removal_counts([sum(numels)], [layer_sparsity], ["the layers in scope"])
    masks = lowest_masks([local_scores[name] for name in names], groups, removals, group_handle)
    return dict(zip(names, masks))
