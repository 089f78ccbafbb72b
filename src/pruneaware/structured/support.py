"""Models Torch-Pruning would prune wrongly or cannot trace, refused before tracing with the module and the fix.

Torch-Pruning slices an LSTM's hidden units along the wrong dimensions, treats GRU and plain RNN
weights and the buffers of frozen batch norms as foreign tensors cut along their last dimension,
cannot follow a channel shuffle through its reshapes, and its index mappings grow without bound
through shifted-window attention. Each case fails deep inside the library, or leaves a broken
model behind; here it is found first and named.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from pruneaware.core.errors import TraceError
from pruneaware.core.materialized import require_materialized
from pruneaware.structured.graph import all_parameters_tracked, preserved_modes
from pruneaware.structured.paths import check_single_path

PRODUCERS = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, nn.RNNBase)
"""Layers whose output channels Torch-Pruning removes: a walk back from a module's input stops at them."""

UNSTRUCTURED_HINT = "prune this model with an unstructured granularity (a 'pruning' section) instead"


def check_supported(model: nn.Module, example_inputs: Any, ignored: Sequence[nn.Module] = ()) -> None:
    """Raise TraceError naming the first module structured pruning would get wrong, and how to get around it.

    ``ignored`` are the modules whose output channels are kept (with their submodules). Layers the
    traced pass does not run are refused or guarded (``check_single_path``).
    """
    require_materialized(model, "structured pruning")
    skipped = {id(sub) for module in ignored for sub in module.modules()}
    _check_window_attention(model, skipped)
    _check_grouped_query_attention(model, skipped)
    seen = _observe(model, example_inputs)
    if seen.shuffles:
        raise TraceError(
            f"{seen.shuffles[0]!r} shuffles channels (a view that splits a dimension in two, then a transpose of the two "
            f"parts); Torch-Pruning cannot map channels through a shuffle and fails or removes the wrong ones; {UNSTRUCTURED_HINT}"
        )
    lstms = [name for name, module in model.named_modules() if isinstance(module, nn.LSTM) and id(module) not in skipped]
    if lstms:
        raise TraceError(
            f"{lstms[0]!r} is an nn.LSTM, whose hidden units Torch-Pruning slices along the wrong dimensions; list {lstms} "
            "under 'ignore' in the structured section (the channels feeding an LSTM can still be removed)"
        )
    _check_foreign_modules(model, skipped, seen)
    check_single_path(model, example_inputs)


def _check_foreign_modules(model: nn.Module, skipped: set[int], seen: _Observation) -> None:
    """GRUs, plain RNNs and frozen batch norms: they and every layer feeding them must keep their channels."""
    first: tuple[str, nn.Module] | None = None
    needed: list[str] = []
    for name, module in model.named_modules():
        rnn = isinstance(module, nn.RNNBase) and not isinstance(module, nn.LSTM)
        if not (rnn or _is_foreign_norm(module)):
            continue
        own = [name] if rnn and id(module) not in skipped else []
        feeding = [seen.names[id(layer)] for layer in seen.producers_of(module) if id(layer) not in skipped]
        if (own or feeding) and first is None:
            first = (name, module)
        needed.extend(name for name in own + feeding if name not in needed)
    if first is None:
        return
    name, module = first
    if isinstance(module, nn.RNNBase):
        raise TraceError(
            f"{name!r} is an nn.{type(module).__name__}, whose weights Torch-Pruning does not know how to slice; list "
            f"{needed} (the recurrent layers and the layers feeding them) under 'ignore' in the structured section"
        )
    raise TraceError(
        f"{name!r} is a {type(module).__name__}, whose running statistics Torch-Pruning does not slice; replace it by an "
        "nn.BatchNorm with frozen parameters kept in eval mode (same outputs), or list the layers feeding such norms "
        f"under 'ignore' in the structured section: {needed}"
    )


def _check_grouped_query_attention(model: nn.Module, skipped: set[int]) -> None:
    """Grouped-query attention shares each key/value head among query heads: channel pruning breaks its reshapes."""
    grouped = [name for name, module in model.named_modules() if id(module) not in skipped and _is_grouped_query(module)]
    if grouped:
        raise TraceError(
            f"{grouped[0]!r} is grouped-query attention (fewer key/value heads than query heads), whose head reshapes "
            "channel pruning breaks; narrow it with the 'gqa_width' stage instead (see docs/compress.md), or list "
            f"{_patterns(grouped, set())} under 'ignore' in the structured section to prune the rest of the model"
        )


def _is_grouped_query(module: nn.Module) -> bool:
    """A Hugging Face attention layer whose config has fewer key/value heads than query heads (Llama, Mistral, Qwen)."""
    groups = getattr(module, "num_key_value_groups", None)
    if isinstance(groups, int) and groups > 1:
        return True
    config = getattr(module, "config", None) if hasattr(module, "q_proj") else None
    kv, heads = getattr(config, "num_key_value_heads", None), getattr(config, "num_attention_heads", None)
    return isinstance(kv, int) and isinstance(heads, int) and kv < heads


def _is_foreign_norm(module: nn.Module) -> bool:
    """A batch norm Torch-Pruning does not know: running statistics kept by a module that is no torch norm."""
    has_statistics = "running_mean" in module._buffers and "running_var" in module._buffers
    return has_statistics and not isinstance(module, nn.modules.batchnorm._NormBase)


def _check_window_attention(model: nn.Module, skipped: set[int]) -> None:
    """Shifted-window models: only the hidden layers of the blocks' MLPs may be pruned; all else must be ignored."""
    windows = [(name, module) for name, module in model.named_modules() if _is_window_attention(module)]
    if not windows:
        return
    hidden: set[str] = set()
    inside: dict[str, str] = {}
    for name, attention in windows:
        width = [child for child in attention.children() if isinstance(child, nn.Linear)][-1].out_features
        block_name = name.rpartition(".")[0]
        inside.update({f"{name}.{sub}": name for sub, _ in attention.named_modules() if sub})
        for sub, layer in model.get_submodule(block_name).named_modules(prefix=block_name):
            if isinstance(layer, nn.Linear) and sub not in inside and layer.out_features != width:
                hidden.add(sub)
    offenders: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and id(module) not in skipped and name not in hidden:
            offenders.append(inside.get(name, name))
    if offenders:
        first, attention = windows[0]
        raise TraceError(
            f"{first!r} ({type(attention).__name__}) is shifted-window attention: Torch-Pruning cannot map channels through "
            "its window reshapes (its index mappings grow without bound). Only the hidden layers of the blocks' MLPs can be "
            f"pruned: add {_patterns(offenders, hidden)} to 'ignore' in the structured section, or {UNSTRUCTURED_HINT}"
        )


def _is_window_attention(module: nn.Module) -> bool:
    """Attention over windows: a ``window_size`` and its own Linear projections (torchvision, timm)."""
    return hasattr(module, "window_size") and any(isinstance(child, nn.Linear) for child in module.children())


def _patterns(names: list[str], keep: set[str]) -> list[str]:
    """Short globs for ``names`` (numeric parts but the last become ``*``) that match none of ``keep``; exact names otherwise."""
    patterns: list[str] = []
    for name in names:
        *path, last = name.split(".")
        glob = ".".join(["*" if part.isdigit() else part for part in path] + [last])
        pattern = name if any(fnmatchcase(other, glob) for other in keep) else glob
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns


@dataclass
class _Observation:
    """What one forward pass showed: channel shuffles, and which layers' outputs reach which modules."""

    names: dict[int, str]
    shuffles: list[str] = field(default_factory=list)
    outputs: dict[Any, nn.Module] = field(default_factory=dict)
    """The autograd node of each producing layer's output."""
    inputs: dict[int, Any] = field(default_factory=dict)
    """The autograd node of each watched module's first input."""

    def producers_of(self, module: nn.Module) -> list[nn.Module]:
        """The producing layers whose outputs flow into ``module`` through channel-preserving operations."""
        found: list[nn.Module] = []
        pending, visited = [self.inputs.get(id(module))], set()
        while pending:
            node = pending.pop()
            if node is None or node in visited:
                continue
            visited.add(node)
            if node in self.outputs:
                found.append(self.outputs[node])
            else:
                pending.extend(parent for parent, _ in node.next_functions)
        return found


def _observe(model: nn.Module, example_inputs: Any) -> _Observation:
    """Run the model once in eval mode, recording shuffles and the autograd nodes around producers and watched modules."""
    seen = _Observation({id(m): n for n, m in model.named_modules()})
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        name = name or type(model).__name__
        handles.append(module.register_forward_pre_hook(_entering(name, module, stack, seen)))
        handles.append(module.register_forward_hook(_leaving(module, stack, seen)))
    try:
        with preserved_modes(model), all_parameters_tracked(model), torch.enable_grad(), _ShuffleFinder(stack, seen.shuffles):
            model.eval()
            _forward(model, example_inputs)
    except Exception:  # tracing runs the same forward next and names the failing module
        pass
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _entering(name: str, module: nn.Module, stack: list[str], seen: _Observation) -> Callable[..., None]:
    watched = isinstance(module, nn.RNNBase) or _is_foreign_norm(module)

    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        stack.append(name)
        if watched and args and isinstance(args[0], Tensor):
            seen.inputs[id(module)] = args[0].grad_fn

    return hook


def _leaving(module: nn.Module, stack: list[str], seen: _Observation) -> Callable[..., None]:
    producer = isinstance(module, PRODUCERS)

    def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:  # must return None: keeps the output
        if stack:
            stack.pop()
        if producer:
            for tensor in output if isinstance(output, (tuple, list)) else (output,):
                if isinstance(tensor, Tensor) and tensor.grad_fn is not None:
                    seen.outputs[tensor.grad_fn] = module

    return hook


def _forward(model: nn.Module, example_inputs: Any) -> Any:
    """Call the model as Torch-Pruning does; floating inputs require grad so every operation leaves a node."""
    if isinstance(example_inputs, dict):
        return model(**{key: _tracked(value) for key, value in example_inputs.items()})
    if isinstance(example_inputs, (tuple, list)):
        return model(*(_tracked(value) for value in example_inputs))
    return model(_tracked(example_inputs))


def _tracked(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.detach().requires_grad_()
    return value


SPLITS = {Tensor.view, Tensor.reshape, torch.reshape, Tensor.unflatten, torch.unflatten}
SWAPS = {Tensor.transpose, torch.transpose, Tensor.swapaxes, torch.swapaxes, Tensor.swapdims, torch.swapdims}
PERMUTES = {Tensor.permute, torch.permute}


class _ShuffleFinder(TorchFunctionMode):
    """Records the module running when a view splits a dimension in two and a transpose then swaps the two parts."""

    def __init__(self, stack: list[str], found: list[str]):
        super().__init__()
        self.stack = stack
        self.found = found
        self.split_at: dict[int, tuple[weakref.ref[Tensor], int]] = {}

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        source = args[0] if args else None
        if not isinstance(source, Tensor) or not isinstance(result, Tensor):
            return result
        if func in SPLITS:
            split = _split_dimension(tuple(source.shape), tuple(result.shape))
            if split is not None:
                self.split_at[id(result)] = (weakref.ref(result), split)
        elif func in SWAPS or func in PERMUTES:
            recorded = self.split_at.get(id(source))
            if recorded is not None and recorded[0]() is source and _swaps(func, args, kwargs, source.dim(), recorded[1]):
                self.found.append(self.stack[-1] if self.stack else "")
        return result


def _split_dimension(before: tuple[int, ...], after: tuple[int, ...]) -> int | None:
    """The dimension k >= 1 of ``before`` that ``after`` splits into two parts (k, k + 1), if that is all it does."""
    if len(after) != len(before) + 1:
        return None
    for k in range(1, len(before)):
        if (
            after[:k] == before[:k]
            and after[k + 2 :] == before[k + 1 :]
            and after[k] * after[k + 1] == before[k]
            and min(after[k], after[k + 1]) > 1
        ):
            return k
    return None


def _swaps(func: Any, args: Sequence[Any], kwargs: dict[str, Any], ndim: int, k: int) -> bool:
    """Whether the transpose or permute puts part ``k + 1`` of a split before part ``k``."""
    if func in SWAPS:
        dims = list(args[1:3]) or [kwargs.get("dim0"), kwargs.get("dim1")]
        return None not in dims and {int(d) % ndim for d in dims} == {k, k + 1}
    order = list(args[1:]) or list(kwargs.get("dims", ()))
    if len(order) == 1 and isinstance(order[0], (tuple, list, torch.Size)):
        order = list(order[0])
    order = [int(d) % ndim for d in order]
    return k in order and k + 1 in order and order.index(k + 1) < order.index(k)
