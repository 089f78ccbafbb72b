"""Transformer blocks run one at a time: find the stack, capture what enters the first block, feed each block's output on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, UsageError
from pruneaware.llm.batches import ModelInputs


def find_blocks(model: nn.Module, name: str | None = None) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: ``name`` if given, else the longest list of same-type modules holding Linears."""
    if name is not None:
        try:
            blocks = model.get_submodule(name)
        except AttributeError:
            blocks = None
        if not isinstance(blocks, nn.ModuleList):
            raise ConfigError("blocks", name, "the name of the nn.ModuleList holding the transformer blocks, e.g. 'model.layers'")
        return name, blocks
    candidates = [
        (prefix, module)
        for prefix, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and len({type(child) for child in module}) == 1
        and any(isinstance(inner, nn.Linear) for inner in module[0].modules())
    ]
    if not candidates:
        raise ConfigError("blocks", None, "a model with an nn.ModuleList of transformer blocks, or blocks='<its name>'")
    return max(candidates, key=lambda item: len(item[1]))


def block_linears(prefix: str, index: int, block: nn.Module) -> dict[str, nn.Linear]:
    """Every Linear inside one block, by its qualified name in the whole model."""
    return {f"{prefix}.{index}.{name}": module for name, module in block.named_modules() if isinstance(module, nn.Linear)}


@dataclass(frozen=True)
class BlockCall:
    """The arguments one batch passes to a block; the hidden states are either ``args[0]`` or ``kwargs['hidden_states']``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def run(self, block: nn.Module) -> Tensor:
        """The block's output hidden states (the first element when it returns a tuple)."""
        output = block(*self.args, **self.kwargs)
        return output[0] if isinstance(output, (tuple, list)) else output

    def with_hidden(self, hidden: Tensor) -> BlockCall:
        if self.args:
            return replace(self, args=(hidden, *self.args[1:]))
        return replace(self, kwargs={**self.kwargs, "hidden_states": hidden})


class _Captured(Exception):
    """Raised from the first block's pre-hook: its inputs are known, the rest of the forward pass is not needed."""


def capture_block_inputs(model: nn.Module, first_block: nn.Module, batches: Sequence[ModelInputs]) -> list[BlockCall]:
    """Run each batch up to ``first_block`` and keep the arguments it receives."""
    calls: list[BlockCall] = []

    def catch(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls.append(BlockCall(tuple(args), dict(kwargs)))
        raise _Captured

    handle = first_block.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for batch in batches:
            try:
                batch.run(model)
            except _Captured:
                continue
            raise UsageError("the model ran to the end without calling its first transformer block; pass blocks='<name>' explicitly")
    finally:
        handle.remove()
    return calls


@contextmanager
def calibration_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no autograd, and no key/value cache (Hugging Face models), all restored afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    if use_cache is not None:
        config.use_cache = False
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.train(training)
        if use_cache is not None:
            config.use_cache = use_cache
