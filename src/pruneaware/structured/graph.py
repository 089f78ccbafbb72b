"""Building Torch-Pruning's dependency graph safely for use in the middle of training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning._helpers import _HybridIndex

from pruneaware.core.errors import PruneawareError, TraceError


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel, so names carry no ``module.`` prefix."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


@contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag afterwards (graph building switches the model to eval)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.train(training)


@contextmanager
def _innermost_module_tracker(model: nn.Module) -> Iterator[list[str]]:
    """Record the stack of module names being executed, to name the one a failure happened in."""
    stack: list[str] = []

    def enter(name: str) -> None:
        stack.append(name)

    def leave() -> None:  # hooks must return None, or they would replace the module's output
        if stack:
            stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda _m, _i, name=name: enter(name)))
        handles.append(module.register_forward_hook(lambda _m, _i, _o: leave()))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def all_parameters_tracked(model: nn.Module) -> Iterator[None]:
    """Make every parameter require grad meanwhile, restoring each flag afterwards.

    Torch-Pruning follows autograd nodes: a frozen layer (``requires_grad=False``) fed by an input
    that needs no gradient leaves none, so it drops out of the graph while the norm after it stays
    in. Its channel groups would then slice the norm and the next layer but not the frozen one.
    """
    frozen = [param for param in model.parameters() if not param.requires_grad]
    for param in frozen:
        param.requires_grad_(True)
    try:
        yield
    finally:
        for param in frozen:
            param.requires_grad_(False)


@contextmanager
def generation_cache_off(model: nn.Module) -> Iterator[None]:
    """Switch off Hugging Face key/value caches (``config.use_cache``) meanwhile: the graph cannot follow cache outputs."""
    configs = {id(c): c for c in (getattr(m, "config", None) for m in model.modules()) if getattr(c, "use_cache", False) is True}
    for config in configs.values():
        config.use_cache = False
    try:
        yield
    finally:
        for config in configs.values():
            config.use_cache = True


@contextmanager
def tracing(model: nn.Module) -> Iterator[None]:
    """Run graph tracing with gradients on (frozen parameters included), train/eval modes preserved and generation
    caches off; failures become a TraceError naming the module whose forward was running."""
    with (
        preserved_modes(model),
        generation_cache_off(model),
        all_parameters_tracked(model),
        _innermost_module_tracker(model) as stack,
        torch.enable_grad(),
    ):
        try:
            yield
        except PruneawareError:
            raise  # raised on purpose: it already names the problem and the fix
        except Exception as error:
            where = stack[-1] if stack else type(model).__name__
            raise TraceError(
                f"the dependency graph cannot trace {type(model).__name__}: {type(error).__name__} in module "
                f"{where!r}: {error}. Check that example_inputs is shaped like a real batch; if it is, list that "
                "module under 'ignore' in the structured section, or prune this model with an unstructured granularity"
            ) from None


@contextmanager
def editing(model: nn.Module) -> Iterator[None]:
    """Ranking and removal (no forward pass runs, so no module hooks): unexpected failures become a TraceError."""
    try:
        yield
    except PruneawareError:
        raise
    except Exception as error:
        raise TraceError(
            f"ranking or removing channel groups of {type(model).__name__} failed: {type(error).__name__}: {error}; "
            "list the modules involved under 'ignore' in the structured section, or prune this model with an "
            "unstructured granularity"
        ) from None


def build_dependency_graph(model: nn.Module, example_inputs: Any, **options: Any) -> Any:
    """A ``torch_pruning.DependencyGraph`` of ``model`` (unwrapped), leaving its train/eval modes as they were."""
    module = unwrap_model(model)
    with tracing(module):
        graph = tp.DependencyGraph().build_dependency(module, example_inputs=example_inputs, verbose=False, **options)
    map_feature_splits(graph)
    return graph


def patch_ranker(ranker: Any) -> None:
    """Fix, right after a ``tp.pruner.BasePruner`` is built, what its graph gets wrong on transformers.

    Feature-dimension splits get their index mappings (``map_feature_splits``), and groups that
    would cut a tied parameter (GPT-2's embedding shared with its output layer) are never ranked:
    Torch-Pruning would slice each user of the parameter into a separate copy, untying them.
    """
    map_feature_splits(ranker.DG)
    ranker.ignored_layers.extend(_modules_cutting_tied_parameters(ranker))


def _modules_cutting_tied_parameters(ranker: Any) -> list[nn.Module]:
    """The output-pruned modules of every group that touches a parameter owned by two modules or more."""
    owners: dict[int, int] = {}
    for module in ranker.model.modules():
        for param in module._parameters.values():
            if param is not None:
                owners[id(param)] = owners.get(id(param), 0) + 1
    if all(count == 1 for count in owners.values()):
        return []
    graph = ranker.DG
    cutting: list[nn.Module] = []
    for group in graph.get_all_groups(ignored_layers=ranker.ignored_layers, root_module_types=ranker.root_module_types):
        touched = [dep.target.module for dep, _ in group]
        params = [p for m in touched for p in ([m] if isinstance(m, nn.Parameter) else m.parameters(recurse=False))]
        if any(owners.get(id(p), 1) > 1 for p in params):
            cutting.extend(dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler))
    return cutting


def map_feature_splits(graph: Any) -> None:
    """Teach the graph which channels each part of a split along the *last* dimension of a 3-D tensor holds.

    Torch-Pruning maps split indices only for splits along dimension 1 (the channels of an image);
    Linear outputs of shape (batch, tokens, features), such as GPT-2's fused q/k/v projection split
    into q, k and v, are split along dimension 2 and were left unmapped, coupling every q channel
    with every k and v channel. The mappings installed here read the split's current part sizes,
    which Torch-Pruning updates as channels are removed.
    """
    for node in graph.module2node.values():
        grad_fn = node.grad_fn
        if node.type != tp.ops.OPTYPE.SPLIT or not hasattr(grad_fn, "_saved_self_sym_sizes"):
            continue
        sizes = [int(size) for size in grad_fn._saved_self_sym_sizes]
        if len(sizes) != 3 or grad_fn._saved_dim not in (2, -1):
            continue
        if hasattr(grad_fn, "_saved_split_sizes"):
            parts = [int(size) for size in grad_fn._saved_split_sizes]
        else:
            step = int(grad_fn._saved_split_size)
            parts = [min(step, sizes[2] - start) for start in range(0, sizes[2], step)]
        node.module.split_sizes = parts
        mapped: list[Any] = []  # two parts may feed one node: each dependency takes one part
        for part, out_node in enumerate(node.outputs[: len(parts)]):
            for deps, target, reverse in ((node.dependencies, out_node, False), (out_node.dependencies, node, True)):
                dep = next((d for d in deps if d.target == target and not any(d is m for m in mapped)), None)
                if dep is not None:
                    dep.index_mapping[0] = _PartMapping(node.module, part, reverse)
                    mapped.append(dep)


class _PartMapping:
    """Index mapping between a split's input and one of its parts, at the split's current part sizes."""

    def __init__(self, split: nn.Module, part: int, to_input: bool):
        self.split, self.part, self.to_input = split, part, to_input

    def __call__(self, idxs: list[Any]) -> list[Any]:
        start = sum(self.split.split_sizes[: self.part])
        end = start + self.split.split_sizes[self.part]
        if self.to_input:
            return [_HybridIndex(idx=i.idx + start, root_idx=i.root_idx) for i in idxs]
        return [_HybridIndex(idx=i.idx - start, root_idx=i.root_idx) for i in idxs if start <= i.idx < end]
