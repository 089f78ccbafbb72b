"""MaskSet: the one owner of every pruning mask, enforced outside the forward pass.

Masks are applied in place to the weights after each optimizer step and, where the driver needs it
(``Stage.may_revive``, ``is_elementwise``), to the gradients before it, so the model stays an
ordinary module (no hooks, no reparametrization) and the forward and backward passes cost exactly
what dense training costs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pruneaware.core.errors import StateError

if TYPE_CHECKING:
    from pruneaware.structured.surgery import ParameterRemap


class MaskSet:
    """Boolean keep-masks (True = keep) for named parameters, starting from their current nonzeros.

    Starting from nonzeros means a model loaded from a sparse checkpoint keeps its zeros, and a
    schedule continues from that sparsity instead of compounding on top of it. With
    ``keep_zeros=False`` every mask starts full: nothing is enforced until masks are set (structured
    recipes remove channels instead, and must not freeze weights that merely happen to be zero).
    """

    def __init__(self, params: Mapping[str, nn.Parameter], *, keep_zeros: bool = True):
        self.params = dict(params)
        with torch.no_grad():
            if keep_zeros:
                self.masks = {name: param.detach() != 0 for name, param in self.params.items()}
            else:
                self.masks = {name: torch.ones_like(param, dtype=torch.bool) for name, param in self.params.items()}
        self.shadows: dict[str, Tensor] | None = None
        self._refresh_multipliers()

    def _refresh_multipliers(self) -> None:
        """Cache the masks that prune something, in their parameter's dtype: enforcement is one fused multiply, no casts.

        A parameter whose mask keeps everything is left out (multiplying by one changes nothing),
        so layers a recipe leaves dense cost nothing per step.
        """
        self._names = [name for name, mask in self.masks.items() if not bool(mask.all())]
        self._any_pruned = bool(self._names)
        self._weights = [self.params[name] for name in self._names]
        self._multipliers = [self.masks[name].to(self.params[name].dtype) for name in self._names]
        if self.shadows is not None:
            self._shadow_list = [self.shadows[name] for name in self._names]
            self._inverse = [1 - multiplier for multiplier in self._multipliers]

    def __iter__(self) -> Iterator[str]:
        return iter(self.masks)

    def __getitem__(self, name: str) -> Tensor:
        return self.masks[name]

    def update(self, new_masks: Mapping[str, Tensor]) -> None:
        """Replace the masks named in ``new_masks`` (shapes must match) and zero the newly pruned weights."""
        for name, mask in new_masks.items():
            if name not in self.params:
                raise StateError(f"mask for unknown parameter {name!r}; known: {sorted(self.params)}")
            if mask.shape != self.params[name].shape:
                raise StateError(f"mask for {name!r} has shape {tuple(mask.shape)}, parameter has {tuple(self.params[name].shape)}")
        for name, mask in new_masks.items():  # all validated first: a rejected update changes nothing
            self.masks[name] = mask.to(device=self.params[name].device, dtype=torch.bool)
        self._refresh_multipliers()
        self.apply_()

    @torch.no_grad()
    def apply_(self) -> None:
        """Zero pruned weights in place (nothing to do, and no cost, while nothing is pruned)."""
        if not self._any_pruned:
            return
        torch._foreach_mul_([w.data for w in self._weights], self._multipliers)

    @torch.no_grad()
    def mask_gradients_(self) -> None:
        """Zero the gradients of pruned weights so optimizer statistics do not grow for them."""
        if not self._any_pruned:
            return
        pairs = [(w.grad, m) for w, m in zip(self._weights, self._multipliers) if w.grad is not None]
        if pairs:
            grads, multipliers = zip(*pairs)
            torch._foreach_mul_(list(grads), list(multipliers))

    def keep_shadows(self) -> None:
        """Keep a dense copy of every masked parameter, so pruned weights can go on training (splicing)."""
        self.shadows = {name: param.detach().clone() for name, param in self.params.items()}
        self._refresh_multipliers()

    @torch.no_grad()
    def restore_shadows_(self) -> None:
        """Before a step: pruned weights (zero) take their shadow values back, so the optimizer updates them too.

        Their gradients were computed with zeros in the forward pass: the straight-through estimate.
        """
        if self._any_pruned:
            torch._foreach_addcmul_([w.data for w in self._weights], self._shadow_list, self._inverse)

    @torch.no_grad()
    def save_shadows_(self) -> None:
        """After a step, before pruned weights are zeroed again: remember every weight's value."""
        torch._foreach_copy_(list(self.shadows.values()), [param.data for param in self.params.values()])

    def shadow_state_dict(self) -> dict[str, Tensor]:
        return {name: shadow.clone().cpu() for name, shadow in self.shadows.items()}

    def load_shadow_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore shadows saved by ``shadow_state_dict``; names and shapes must match."""
        if set(state) != set(self.shadows) or any(state[name].shape != shadow.shape for name, shadow in self.shadows.items()):
            raise StateError(f"shadow state does not match the pruned parameters {sorted(self.shadows)}")
        for name, shadow in self.shadows.items():
            shadow.copy_(state[name])

    def remap(self, remaps: Sequence[ParameterRemap]) -> None:
        """Follow parameters replaced by channel removal: swap them in and slice their masks to match."""
        by_old = {id(remap.old): remap for remap in remaps}
        for name, param in list(self.params.items()):
            remap = by_old.get(id(param))
            if remap is not None and remap.new is None:  # removed with its layer
                del self.params[name], self.masks[name]
                if self.shadows is not None:
                    self.shadows.pop(name, None)
            elif remap is not None:
                self.params[name] = remap.new
                self.masks[name] = remap.slice(self.masks[name])
        self._refresh_multipliers()

    def kept(self, name: str) -> int:
        return int(self.masks[name].sum())

    def sparsity(self) -> float:
        """Fraction of masked-out entries over all masked parameters."""
        total = sum(mask.numel() for mask in self.masks.values())
        return 1.0 - sum(self.kept(name) for name in self.masks) / max(total, 1)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: mask.clone().cpu() for name, mask in self.masks.items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore masks saved by ``state_dict``; names must match exactly."""
        if set(state) != set(self.params):
            missing, extra = sorted(set(self.params) - set(state)), sorted(set(state) - set(self.params))
            raise StateError(f"mask state does not match the pruned parameters: missing {missing}, unexpected {extra}")
        for name, mask in state.items():
            if mask.dtype != torch.bool:
                raise StateError(f"mask {name!r} has dtype {mask.dtype}; masks are boolean")
        self.update(state)
