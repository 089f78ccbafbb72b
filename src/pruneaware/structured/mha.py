"""A drop-in ``nn.MultiheadAttention`` with separate q/k/v projections, so whole heads can be removed.

Torch-Pruning treats ``nn.MultiheadAttention`` as one layer whose only prunable width is the
embedding (its packed ``in_proj_weight`` hides the heads). This module computes the same function
with ``q_proj``/``k_proj``/``v_proj``/``out_proj`` Linears and a ``head_dim`` attribute, which the
dependency graph can follow head by head. The softmax scale stays that of the original head size,
so removing head dimensions does not change what the surviving ones compute.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pruneaware.core.errors import TraceError, UsageError


class PrunableMultiheadAttention(nn.Module):
    """Multi-head attention with the call signature and results of ``nn.MultiheadAttention``."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        options = {"bias": bias, "device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, embed_dim, **options)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, **options)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, **options)
        self.out_proj = nn.Linear(embed_dim, embed_dim, **options)
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.dropout = dropout
        self.batch_first = batch_first

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention, name: str = "") -> PrunableMultiheadAttention:
        """The equivalent module holding copies of ``mha``'s weights (same outputs, dtype, device and grad flags)."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise TraceError(
                f"nn.MultiheadAttention {name!r} uses add_bias_kv or add_zero_attn, which cannot be converted; "
                "list it under 'ignore' in the structured section"
            )
        weight = mha.in_proj_weight if mha.in_proj_weight is not None else mha.q_proj_weight
        new = cls(
            mha.embed_dim,
            mha.num_heads,
            kdim=mha.kdim,
            vdim=mha.vdim,
            bias=mha.in_proj_bias is not None,
            dropout=mha.dropout,
            batch_first=mha.batch_first,
            device=weight.device,
            dtype=weight.dtype,
        )
        if mha.in_proj_weight is not None:
            weights = mha.in_proj_weight.chunk(3)
            flags = (mha.in_proj_weight.requires_grad,) * 3
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            flags = tuple(w.requires_grad for w in weights)
        biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
        with torch.no_grad():
            for linear, w, b, flag in zip((new.q_proj, new.k_proj, new.v_proj), weights, biases, flags):
                linear.weight.copy_(w)
                linear.weight.requires_grad_(flag)
                if b is not None:
                    linear.bias.copy_(b)
                    linear.bias.requires_grad_(mha.in_proj_bias.requires_grad)
        new.out_proj = mha.out_proj
        new.train(mha.training)
        return new

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention output and (when ``need_weights``) the attention weights, as ``nn.MultiheadAttention`` returns them.

        ``is_causal`` is only a hint there: ``attn_mask`` must be given and is what is applied.
        """
        if is_causal and attn_mask is None:
            raise UsageError("is_causal needs attn_mask (as for nn.MultiheadAttention): pass the causal mask itself")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = (self._split_heads(proj(x)) for proj, x in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        mask = self._additive_mask(attn_mask, key_padding_mask, q)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) * self.scale
            weights = F.dropout(torch.softmax(scores if mask is None else scores + mask, dim=-1), dropout)
            out = weights @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
            weights = weights if batched else weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scale)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if not batched:
            return out.squeeze(0), weights
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _split_heads(self, x: Tensor) -> Tensor:
        """(batch, length, heads * head_dim) -> (batch, heads, length, head_dim); the head count follows the width."""
        return x.reshape(x.shape[0], x.shape[1], -1, self.head_dim).transpose(1, 2)

    @staticmethod
    def _additive_mask(attn_mask: Tensor | None, key_padding_mask: Tensor | None, q: Tensor) -> Tensor | None:
        """One float mask added to the scores (boolean masks: True means "do not attend", as in MultiheadAttention)."""
        merged = None
        if attn_mask is not None:
            if attn_mask.dim() != 2:
                raise UsageError(
                    f"attn_mask of shape {tuple(attn_mask.shape)}: only (target, source) masks are supported, "
                    "since per-head masks stop fitting once heads are removed"
                )
            merged = _as_additive(attn_mask, q.dtype)
        if key_padding_mask is not None:
            padding = _as_additive(key_padding_mask, q.dtype)[:, None, None, :]
            merged = padding if merged is None else merged + padding
        return merged


def _as_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)
