"""The sequential one-shot driver: block by block, each Linear pruned from inputs that already pass through the pruned blocks before it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

from pruneaware.llm.batches import calibration_inputs
from pruneaware.llm.blocks import block_linears, calibration_mode, capture_block_inputs, find_blocks
from pruneaware.llm.statistics import InputStatistics, collect_statistics
from pruneaware.llm.targets import SparsityTarget

PruneLayer = Callable[[str, nn.Linear, InputStatistics], Tensor]
"""Prunes one Linear in place from its input statistics and returns its keep-mask (True = kept)."""


def prune_blocks(
    model: nn.Module,
    calibration: Iterable[Any],
    target: SparsityTarget,
    prune_layer: PruneLayer,
    *,
    hessian: bool,
    blocks: str | None = None,
) -> dict[str, Tensor]:
    """Run calibration through the blocks one at a time, pruning every Linear of a block before the next sees its output.

    For each block: hooks collect the inputs of its Linears over all batches, ``prune_layer``
    prunes each, then the batches run through the pruned block to become the next block's inputs.
    Embeddings and the output head are left as they are. Returns keep-masks by parameter name.
    """
    prefix, stack = find_blocks(model, blocks)
    for index, block in enumerate(stack):
        for name, linear in block_linears(prefix, index, block).items():
            target.check(f"{name}.weight", linear.weight)
    batches = calibration_inputs(calibration)
    masks: dict[str, Tensor] = {}
    with calibration_mode(model):
        calls = capture_block_inputs(model, stack[0], batches)
        for index, block in enumerate(stack):
            linears = block_linears(prefix, index, block)
            with collect_statistics(linears, hessian=hessian) as hooks:
                for call, batch in zip(calls, batches):
                    hooks.token_mask = batch.token_mask
                    call.run(block)
            for name, linear in linears.items():
                masks[f"{name}.weight"] = prune_layer(name, linear, hooks[name])
            calls = [call.with_hidden(call.run(block)) for call in calls]
    return masks
