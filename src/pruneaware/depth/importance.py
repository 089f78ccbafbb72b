"""How much a block matters: block influence on calibration data, or a gate on its residual branch.

Block influence is ``1 - cos(input, output)`` (a block that barely changes its input can go),
averaged over tokens for hidden states shaped (batch, tokens, features), as ShortGPT and Minitron
define it, and over examples for other shapes (a convolution's whole feature map). Per token
matters in decoders: a few tokens with huge activations (the first one, an attention sink) would
otherwise dominate a whole sequence's cosine and hide what a block does to every other token.

A gate scales the block's change of its input, ``x + g * (block(x) - x)``: trained with a penalty
it is pushed toward 0 for blocks the loss does without (``gate``), and at ``g = 1`` the gradient
of the loss with respect to it is the first-order Taylor estimate of removing the block (``taylor``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneaware.depth.blocks import block_input, first_tensor, run


def block_influence(model: nn.Module, names: Sequence[str], batches: Iterable[Any]) -> dict[str, float]:
    """Mean of ``1 - cos(input, output)`` of each named block on the inputs in ``batches``: per token for 3-D hidden
    states (padding left out where a batch carries an ``attention_mask``), else per example."""
    totals = {name: 0.0 for name in names}
    counts = {name: 0 for name in names}
    handles = []
    current: dict[str, Tensor | None] = {"tokens": None}

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            inp, out = block_input(args, kwargs), first_tensor(output)
            cosine = _cosine(inp, out, current["tokens"])
            totals[name] += float((1 - cosine).sum())
            counts[name] += cosine.numel()
        return record

    for name in names:
        handles.append(model.get_submodule(name).register_forward_hook(hook(name), with_kwargs=True))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for inputs in batches:
                current["tokens"] = _real_tokens(inputs)
                run(model, inputs)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return {name: totals[name] / max(counts[name], 1) for name in names}


def _real_tokens(inputs: Any) -> Tensor | None:
    """The (batch, tokens) mask of real tokens of a batch given as keywords with an ``attention_mask``, else None.

    Padding positions carry no text: a block may leave them nearly unchanged or change them wildly, and averaged in
    they would decide which blocks look removable (measured on MiniLM, docs/compress.md).
    """
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    return mask.bool() if isinstance(mask, Tensor) and mask.dim() == 2 else None


def _cosine(inp: Tensor, out: Tensor, tokens: Tensor | None = None) -> Tensor:
    """Cosine similarity of a block's input and output: per token of (batch, tokens, features), only the real
    ``tokens`` where given, else per example."""
    if inp.dim() == 3:
        cosine = F.cosine_similarity(inp.float(), out.float(), dim=-1)
        if tokens is not None and tokens.shape == cosine.shape:
            return cosine[tokens.to(cosine.device)]
        return cosine.flatten()
    return F.cosine_similarity(inp.flatten(1).float(), out.flatten(1).float(), dim=1)


class BlockGates:
    """One scalar gate per block on ``x + g * (block(x) - x)``, applied by forward hooks until ``remove``."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        device = next(model.parameters()).device
        self.gates = {name: nn.Parameter(torch.ones((), device=device)) for name in names}
        self._handles = {name: model.get_submodule(name).register_forward_hook(self._hook(name), with_kwargs=True) for name in names}

    def _hook(self, name: str) -> Any:
        def gate(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            inp, out = block_input(args, kwargs), first_tensor(output)
            gated = inp + self.gates[name].to(out.dtype) * (out - inp)
            return gated if isinstance(output, Tensor) else (gated, *output[1:])
        return gate

    def values(self) -> dict[str, float]:
        return {name: float(gate.detach()) for name, gate in self.gates.items()}

    def penalty(self) -> Tensor:
        """The sum of the gates (they are kept in [0, 1]): an L1 push toward removing blocks."""
        return torch.stack(list(self.gates.values())).sum()

    def clamp_(self) -> None:
        with torch.no_grad():
            for gate in self.gates.values():
                gate.clamp_(0.0, 1.0)

    def remove(self, name: str) -> nn.Parameter:
        """Stop gating ``name``; returns its gate parameter (for the optimizer to drop)."""
        self._handles.pop(name).remove()
        return self.gates.pop(name)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: gate.detach().cpu().clone() for name, gate in self.gates.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name, value in state.items():
                if name in self.gates:
                    self.gates[name].copy_(value)
