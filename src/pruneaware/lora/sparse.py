"""LoRA adapters (``peft``) on a pruned model that keep its sparsity when merged.

peft's own ``merge_and_unload`` adds the dense update ``B @ A * scaling`` to every base weight,
filling the zeros pruning made (and breaking 2:4 patterns). Here the update is multiplied by the
base's keep-mask: either only at merge (``mode="merge"``: training sees a dense update the merge
then cuts, so the merged model differs from the one trained), or in every forward pass as well
(``mode="product"``: the adapter trains through the masked product ``(B @ A) * mask``, so the
merge is exactly the model that was trained). The base weights are frozen by peft and stay sparse.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, StateError, UsageError

MODES = ("product", "merge")
MASK = "pruneaware_keep_mask"


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """peft's LoRA layers by name, with the model's own prefix (``base_model.model.``) stripped."""
    from peft.tuners.lora import LoraLayer

    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            layers[name.removeprefix("base_model.model.")] = module
    return layers


def _masked_forward(self: Any, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """peft's Linear forward with each adapter's update masked like the base weight: ``base(x) + x (B A ⊙ M)^T s``."""
    if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    mask = getattr(self, MASK)
    for adapter in self.active_adapters:
        if adapter not in self.lora_A:
            continue
        a, b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        inputs = self.lora_dropout[adapter](x.to(a.dtype))
        result = result + F.linear(inputs, (b @ a) * mask) * self.scaling[adapter]
    return result


class SparseLoRA:
    """Keeps a peft LoRA model's merge as sparse as its pruned base; train with any loop, then ``merge()``.

    ``scope``: names of the pruned weights (e.g. ``pruner.params``' keys, as in the bare model);
    LoRA targets outside it are warned about once (their merge is dense where the base is dense).
    Without ``scope`` the pruned weights are those with zeros.
    """

    def __init__(self, model: nn.Module, *, mode: str = "product", scope: Iterable[str] | None = None):
        if mode not in MODES:
            raise ConfigError("mode", mode, MODES)
        self.model, self.mode = model, mode
        self.layers = lora_layers(model)
        if not self.layers:
            raise UsageError("the model has no LoRA layers: wrap it with peft.get_peft_model(model, LoraConfig(target_modules=[...])) first")
        self.masks: dict[str, Tensor] = {}
        for name, layer in self.layers.items():
            base = layer.get_base_layer()
            if not isinstance(base, nn.Linear):
                raise ConfigError(f"LoRA target {name!r}", type(base).__name__, "nn.Linear targets (sparse LoRA masks Linear weights)")
            self.masks[name] = base.weight.detach() != 0
        self._warn_outside(scope)
        self.base_zeros = self.count_zeros()
        if mode == "product":
            for name, layer in self.layers.items():
                layer.register_buffer(MASK, self.masks[name].to(layer.get_base_layer().weight.dtype), persistent=False)
                layer.forward = types.MethodType(_masked_forward, layer)

    def _warn_outside(self, scope: Iterable[str] | None) -> None:
        pruned = {name.removesuffix(".weight") for name in scope} if scope is not None else {n for n, m in self.masks.items() if not bool(m.all())}
        outside = sorted(set(self.layers) - pruned)
        if outside:
            warnings.warn(
                f"LoRA targets {outside} are outside the pruning scope: their merged weights are as dense as their base; "
                "target only pruned layers (LoraConfig(target_modules=...)) if the merged model must be sparse everywhere",
                UserWarning, stacklevel=3,
            )

    def count_zeros(self) -> dict[str, int]:
        """Exact zeros of each LoRA target's base weight."""
        return {name: int((layer.get_base_layer().weight == 0).sum()) for name, layer in self.layers.items()}

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """Fold each adapter's masked update into its base weight and return the plain model (peft layers removed).

        The merged model has exactly the zeros of the base (checked); in ``product`` mode it computes
        exactly what the trained adapter did.
        """
        for name, layer in self.layers.items():
            base = layer.get_base_layer()
            for adapter in layer.active_adapters:
                if adapter in layer.lora_A:
                    base.weight += layer.get_delta_weight(adapter).to(base.weight.dtype) * self.masks[name].to(base.weight.dtype)
            if MASK in layer._buffers:
                del layer._buffers[MASK]
                del layer.forward
        merged = self.model.unload()
        zeros = self.count_zeros()
        changed = {name: (self.base_zeros[name], zeros[name]) for name in zeros if zeros[name] < self.base_zeros[name]}
        if changed:
            raise StateError(f"merging lost zeros of the pruned base (before, after): {changed}; were the base weights trained?")
        return merged
