"""Width pruning of Llama-family decoders: grouped-query attention and gated MLPs, with the Hugging Face config updated.

Grouped-query attention shares each key/value head among a group of query heads, so heads go
consistently: whole KV groups (their key/value heads, their query heads and the matching columns
of ``o_proj``), or the same number of query heads inside every group. A gated MLP loses neurons
together in ``gate_proj`` and ``up_proj`` (rows) and ``down_proj`` (columns). Every layer keeps the
same counts, so one ``config`` (heads, KV heads, intermediate size) describes the result and
``from_pretrained`` rebuilds it with no pruneaware code; per-layer counts are not offered because
these configs cannot express them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError
from pruneaware.structured.surgery import AxisCut, ParameterRemap


def llama_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers (``self_attn`` with q/k/v/o projections, ``mlp`` with gate/up/down)."""
    layers = [m for m in model.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp") and hasattr(m.mlp, "gate_proj")]
    if not layers or not all(hasattr(layer.self_attn, "k_proj") and hasattr(layer.self_attn, "o_proj") for layer in layers):
        raise ConfigError("model", type(model).__name__, "a Llama-family decoder (layers with self_attn.q/k/v/o_proj and mlp.gate/up/down_proj)")
    return layers


def _cut(owner: nn.Module, name: str, dim: int, index: Tensor) -> ParameterRemap:
    old = getattr(owner, name)
    new = nn.Parameter(old.detach().index_select(dim, index).clone(), requires_grad=old.requires_grad)
    setattr(owner, name, new)
    return ParameterRemap(old, new, (AxisCut(dim, index),))


def _linear(linear: nn.Linear, dim: int, index: Tensor) -> list[ParameterRemap]:
    """Keep ``index`` along the output (dim 0) or input (dim 1) of a Linear, bias included for outputs."""
    remaps = [_cut(linear, "weight", dim, index)]
    if dim == 0 and linear.bias is not None:
        remaps.append(_cut(linear, "bias", 0, index))
    if dim == 0:
        linear.out_features = len(index)
    else:
        linear.in_features = len(index)
    return remaps


def _group_scores(attn: nn.Module, heads: int, kv_heads: int, head_dim: int) -> Tensor:
    """L2 norm per query head of its q rows and o columns, shaped (kv_heads, queries per group)."""
    q = attn.q_proj.weight.detach().reshape(heads, head_dim, -1).pow(2).sum((1, 2))
    o = attn.o_proj.weight.detach().reshape(-1, heads, head_dim).pow(2).sum((0, 2))
    return (q + o).sqrt().reshape(kv_heads, heads // kv_heads)


def prune_gqa(model: nn.Module, kv_groups: int | None = None, queries_per_group: int | None = None, intermediate: int | None = None) -> list[ParameterRemap]:
    """Keep ``kv_groups`` KV groups, ``queries_per_group`` query heads in each, and ``intermediate`` MLP neurons per layer (by weight norm).

    Returns the remaps of every replaced parameter (announce them so an optimizer follows) and updates ``model.config``.
    """
    config = getattr(model, "config", None)
    layers = llama_layers(model)
    first = layers[0].self_attn
    head_dim = first.head_dim
    heads, kv_heads = first.q_proj.out_features // head_dim, first.k_proj.out_features // head_dim
    per_group = heads // kv_heads
    groups = kv_groups if kv_groups is not None else kv_heads
    queries = queries_per_group if queries_per_group is not None else per_group
    width = intermediate if intermediate is not None else layers[0].mlp.gate_proj.out_features
    if not 1 <= groups <= kv_heads:
        raise ConfigError("gqa.kv_groups", kv_groups, f"a count in [1, {kv_heads}] (the model has {kv_heads} key/value heads)")
    if not 1 <= queries <= per_group:
        raise ConfigError("gqa.queries_per_group", queries_per_group, f"a count in [1, {per_group}] ({heads} query heads share {kv_heads} key/value heads)")
    if not 1 <= width <= layers[0].mlp.gate_proj.out_features:
        raise ConfigError("gqa.intermediate", intermediate, f"a neuron count in [1, {layers[0].mlp.gate_proj.out_features}]")
    remaps: list[ParameterRemap] = []
    for layer in layers:
        remaps += _prune_attention(layer.self_attn, heads, kv_heads, head_dim, groups, queries)
        remaps += _prune_mlp(layer.mlp, width)
    if config is not None:
        config.head_dim = head_dim  # explicit: hidden_size / heads no longer gives it
        config.num_attention_heads, config.num_key_value_heads, config.intermediate_size = groups * queries, groups, width
    return remaps


def _prune_attention(attn: nn.Module, heads: int, kv_heads: int, head_dim: int, groups: int, queries: int) -> list[ParameterRemap]:
    scores = _group_scores(attn, heads, kv_heads, head_dim)
    kept_groups = scores.sum(1).topk(groups).indices.sort().values
    kept_queries = scores[kept_groups].topk(queries, dim=1).indices.sort(dim=1).values  # per kept group
    per_group = heads // kv_heads
    query_heads = (kept_groups[:, None] * per_group + kept_queries).reshape(-1)
    dims = torch.arange(head_dim)
    q_index = (query_heads[:, None] * head_dim + dims).reshape(-1)
    kv_index = (kept_groups[:, None] * head_dim + dims).reshape(-1)
    remaps = _linear(attn.q_proj, 0, q_index) + _linear(attn.k_proj, 0, kv_index) + _linear(attn.v_proj, 0, kv_index) + _linear(attn.o_proj, 1, q_index)
    attn.num_key_value_groups = queries
    for attribute, value in (("num_heads", groups * queries), ("num_key_value_heads", groups)):
        if isinstance(getattr(attn, attribute, None), int):
            setattr(attn, attribute, value)
    return remaps


def _prune_mlp(mlp: nn.Module, width: int) -> list[ParameterRemap]:
    if width == mlp.gate_proj.out_features:
        return []
    score = mlp.gate_proj.weight.detach().norm(dim=1) * mlp.up_proj.weight.detach().norm(dim=1) * mlp.down_proj.weight.detach().norm(dim=0)
    index = score.topk(width).indices.sort().values
    return _linear(mlp.gate_proj, 0, index) + _linear(mlp.up_proj, 0, index) + _linear(mlp.down_proj, 1, index)
