"""Width pruning of Llama-family decoders: grouped-query attention and gated MLPs, with the Hugging Face config updated.

Grouped-query attention shares each key/value head among a group of query heads, so heads go
consistently: whole KV groups (their key/value heads, their query heads and the matching columns
of ``o_proj``), or the same number of query heads inside every group. A gated MLP loses neurons
together in ``gate_proj`` and ``up_proj`` (rows) and ``down_proj`` (columns). Every layer keeps the
same counts, so one ``config`` (heads, KV heads, intermediate size) describes the result and
``from_pretrained`` rebuilds it with no pruneaware code; per-layer counts are not offered because
these configs cannot express them.

Importance, per layer:

- ``activation`` (Minitron's): on calibration batches, an MLP neuron scores the mean ``|act(gate) * up|``
  of its gated product over tokens, a query head the mean norm of its contribution to the residual
  stream (its attention output through its columns of ``o_proj``), a KV group the sum of its query
  heads' scores. Tokens masked out by an ``attention_mask`` in the inputs do not count.
- ``weight``: a neuron scores the product of the norms of its ``gate_proj``/``up_proj`` rows and
  ``down_proj`` column, a query head the norm of its ``q_proj`` rows and ``o_proj`` columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError
from pruneaware.depth.blocks import run
from pruneaware.structured.surgery import AxisCut, ParameterRemap

IMPORTANCE = ("activation", "weight")
Plan = dict[str, dict[str, list[int]]]


def llama_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers (``self_attn`` with q/k/v/o projections, ``mlp`` with gate/up/down)."""
    return list(named_llama_layers(model).values())


def named_llama_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The decoder layers by module name, in model order; a ConfigError for a model without them."""
    layers = {name: m for name, m in model.named_modules() if hasattr(m, "self_attn") and hasattr(m, "mlp") and hasattr(m.mlp, "gate_proj")}
    if not layers or not all(hasattr(layer.self_attn, "k_proj") and hasattr(layer.self_attn, "o_proj") for layer in layers.values()):
        raise ConfigError("model", type(model).__name__, "a Llama-family decoder (layers with self_attn.q/k/v/o_proj and mlp.gate/up/down_proj)")
    return layers


def _cut(owner: nn.Module, name: str, dim: int, index: Tensor) -> ParameterRemap:
    old = getattr(owner, name)
    new = nn.Parameter(old.detach().index_select(dim, index.to(old.device)).clone(), requires_grad=old.requires_grad)
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


def _head_counts(attn: nn.Module) -> tuple[int, int, int]:
    head_dim = attn.head_dim
    return attn.q_proj.out_features // head_dim, attn.k_proj.out_features // head_dim, head_dim


def weight_scores(model: nn.Module) -> dict[str, tuple[Tensor, Tensor]]:
    """Per layer: (query-head scores, MLP-neuron scores) from weight norms alone."""
    scores = {}
    for name, layer in named_llama_layers(model).items():
        attn, mlp = layer.self_attn, layer.mlp
        heads, _, head_dim = _head_counts(attn)
        q = attn.q_proj.weight.detach().float().reshape(heads, head_dim, -1).pow(2).sum((1, 2))
        o = attn.o_proj.weight.detach().float().reshape(-1, heads, head_dim).pow(2).sum((0, 2))
        neurons = mlp.gate_proj.weight.detach().float().norm(dim=1) * mlp.up_proj.weight.detach().float().norm(dim=1) * mlp.down_proj.weight.detach().float().norm(dim=0)
        scores[name] = ((q + o).sqrt().cpu(), neurons.cpu())
    return scores


@torch.no_grad()
def activation_scores(model: nn.Module, batches: Iterable[Any]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per layer: (query-head scores, MLP-neuron scores), mean over the calibration tokens of each head's output norm and each neuron's |gated product|."""
    layers = named_llama_layers(model)
    sums = {name: [torch.zeros(_head_counts(layer.self_attn)[0]), torch.zeros(layer.mlp.down_proj.in_features)] for name, layer in layers.items()}
    state: dict[str, Any] = {"mask": None, "tokens": 0.0}

    def weights(hidden: Tensor) -> Tensor:
        """Per-token weight (1 for a real token, 0 for padding), flattened to (tokens,)."""
        mask = state["mask"]
        if mask is None or mask.shape != hidden.shape[:-1]:
            return torch.ones(hidden.shape[:-1].numel(), device=hidden.device)
        return mask.reshape(-1).to(hidden.device, torch.float32)

    def on_o_proj(name: str, heads: int, head_dim: int) -> Any:
        def hook(module: nn.Linear, args: tuple[Tensor, ...]) -> None:
            x = args[0].reshape(-1, heads, head_dim).float()
            w = module.weight.detach().float().reshape(module.out_features, heads, head_dim)
            keep = weights(args[0])
            for head in range(heads):  # one head at a time: (tokens, hidden) at most
                sums[name][0][head] += float((x[:, head] @ w[:, head].T).norm(dim=-1).mul(keep).sum())
        return hook

    def on_down_proj(name: str) -> Any:
        def hook(module: nn.Linear, args: tuple[Tensor, ...]) -> None:
            x = args[0].reshape(-1, module.in_features).float()
            sums[name][1] += (x.abs() * weights(args[0])[:, None]).sum(0).cpu()
        return hook

    def count(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        state["tokens"] += float(weights(hidden).sum())

    first = next(iter(layers.values()))
    handles = [first.register_forward_pre_hook(count, with_kwargs=True)]
    for name, layer in layers.items():
        heads, _, head_dim = _head_counts(layer.self_attn)
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(on_o_proj(name, heads, head_dim)))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(on_down_proj(name)))
    training, seen = model.training, 0
    try:
        model.eval()
        for inputs in batches:
            state["mask"] = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
            run(model, inputs)
            seen += 1
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    if not seen or not state["tokens"]:
        raise ConfigError("calibration_data", None, "at least one batch with unmasked tokens: activation importance runs the model on data")
    return {name: (heads / state["tokens"], neurons / state["tokens"]) for name, (heads, neurons) in sums.items()}


def plan_gqa(scores: Mapping[str, tuple[Tensor, Tensor]], kv_heads: int, kv_groups: int, queries_per_group: int, intermediate: int) -> Plan:
    """Per layer, the query heads, KV groups and MLP neurons to keep (sorted indices) given their ``scores``."""
    plan: Plan = {}
    for name, (head_scores, neuron_scores) in scores.items():
        grouped = head_scores.reshape(kv_heads, -1)
        per_group = grouped.shape[1]
        groups = grouped.sum(1).topk(kv_groups).indices.sort().values
        queries = grouped[groups].topk(queries_per_group, dim=1).indices.sort(dim=1).values  # per kept group
        neurons = neuron_scores.topk(intermediate).indices.sort().values
        plan[name] = {"groups": groups.tolist(), "heads": (groups[:, None] * per_group + queries).reshape(-1).tolist(), "neurons": neurons.tolist()}
    return plan


def apply_gqa_plan(model: nn.Module, plan: Plan) -> list[ParameterRemap]:
    """Cut every layer to the heads, groups and neurons ``plan`` keeps; returns the remaps and updates ``model.config``."""
    layers = named_llama_layers(model)
    missing = [name for name in plan if name not in layers]
    if missing:
        raise ConfigError("gqa plan", missing, f"decoder layers of this model: {list(layers)[:4]} ...")
    remaps: list[ParameterRemap] = []
    counts = set()
    for name, keep in plan.items():
        layer = layers[name]
        remaps += _prune_attention(layer.self_attn, keep["groups"], keep["heads"])
        if len(keep["neurons"]) != layer.mlp.gate_proj.out_features:
            index = torch.tensor(keep["neurons"], dtype=torch.long)
            remaps += _linear(layer.mlp.gate_proj, 0, index) + _linear(layer.mlp.up_proj, 0, index) + _linear(layer.mlp.down_proj, 1, index)
        counts.add((len(keep["heads"]), len(keep["groups"]), len(keep["neurons"]), layer.self_attn.head_dim))
    config = getattr(model, "config", None)
    if config is not None and len(counts) == 1:
        (heads, groups, width, head_dim), = counts
        config.head_dim = head_dim  # explicit: hidden_size / heads no longer gives it
        config.num_attention_heads, config.num_key_value_heads, config.intermediate_size = heads, groups, width
    return remaps


def prune_gqa(
    model: nn.Module, kv_groups: int | None = None, queries_per_group: int | None = None, intermediate: int | None = None,
    importance: str = "activation", batches: Iterable[Any] | None = None,
) -> list[ParameterRemap]:
    """Keep ``kv_groups`` KV groups, ``queries_per_group`` query heads in each, and ``intermediate`` MLP neurons per layer.

    ``importance`` is ``activation`` (needs ``batches`` of model inputs) or ``weight``. Returns the
    remaps of every replaced parameter (announce them so an optimizer follows) and updates ``model.config``.
    """
    return apply_gqa_plan(model, choose_gqa(model, kv_groups, queries_per_group, intermediate, importance, batches))


def choose_gqa(
    model: nn.Module, kv_groups: int | None = None, queries_per_group: int | None = None, intermediate: int | None = None,
    importance: str = "activation", batches: Iterable[Any] | None = None,
) -> Plan:
    """The plan ``prune_gqa`` applies: per layer, the query heads, KV groups and MLP neurons kept (checks the counts first)."""
    layers = llama_layers(model)
    heads, kv_heads, _ = _head_counts(layers[0].self_attn)
    neurons = layers[0].mlp.gate_proj.out_features
    per_group = heads // kv_heads
    groups = kv_groups if kv_groups is not None else kv_heads
    queries = queries_per_group if queries_per_group is not None else per_group
    width = intermediate if intermediate is not None else neurons
    if not 1 <= groups <= kv_heads:
        raise ConfigError("gqa.kv_groups", kv_groups, f"a count in [1, {kv_heads}] (the model has {kv_heads} key/value heads)")
    if not 1 <= queries <= per_group:
        raise ConfigError("gqa.queries_per_group", queries_per_group, f"a count in [1, {per_group}] ({heads} query heads share {kv_heads} key/value heads)")
    if not 1 <= width <= neurons:
        raise ConfigError("gqa.intermediate", intermediate, f"a neuron count in [1, {neurons}]")
    if any(_head_counts(layer.self_attn)[:2] != (heads, kv_heads) or layer.mlp.gate_proj.out_features != neurons for layer in layers):
        raise ConfigError("model", type(model).__name__, "decoder layers that all have the same head and neuron counts (cut them once)")
    if importance not in IMPORTANCE:
        raise ConfigError("gqa.importance", importance, IMPORTANCE)
    if importance == "activation":
        if batches is None:
            raise ConfigError("gqa.batches", None, "calibration batches of model inputs: importance 'activation' runs the model on data (or use importance 'weight')")
        scores = activation_scores(model, batches)
    else:
        scores = weight_scores(model)
    return plan_gqa(scores, kv_heads, groups, queries, width)


def _prune_attention(attn: nn.Module, kept_groups: list[int], query_heads: list[int]) -> list[ParameterRemap]:
    heads, kv_heads, head_dim = _head_counts(attn)
    if len(kept_groups) == kv_heads and len(query_heads) == heads:
        return []
    dims = torch.arange(head_dim)
    q_index = (torch.tensor(query_heads)[:, None] * head_dim + dims).reshape(-1)
    kv_index = (torch.tensor(kept_groups)[:, None] * head_dim + dims).reshape(-1)
    remaps = _linear(attn.q_proj, 0, q_index) + _linear(attn.k_proj, 0, kv_index) + _linear(attn.v_proj, 0, kv_index) + _linear(attn.o_proj, 1, q_index)
    groups, queries = len(kept_groups), len(query_heads) // len(kept_groups)
    attn.num_key_value_groups = queries
    for attribute, value in (("num_heads", groups * queries), ("num_key_value_heads", groups)):
        if isinstance(getattr(attn, attribute, None), int):
            setattr(attn, attribute, value)
    return remaps
