"""Building Torch-Pruning's dependency graph safely for use in the middle of training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from pruneaware.errors import TraceError


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
def tracing(model: nn.Module) -> Iterator[None]:
    """Run graph tracing with gradients on and train/eval modes preserved; failures become a TraceError
    naming the module whose forward was running."""
    with preserved_modes(model), _innermost_module_tracker(model) as stack, torch.enable_grad():
        try:
            yield
        except Exception as error:
            where = stack[-1] if stack else type(model).__name__
            raise TraceError(
                f"the dependency graph cannot trace {type(model).__name__}: {type(error).__name__} in module "
                f"{where!r}: {error}. Check that example_inputs is shaped like a real batch; if it is, list that "
                "module under 'ignore' in the structured section, or prune this model with an unstructured granularity"
            ) from None


def build_dependency_graph(model: nn.Module, example_inputs: Any, **options: Any) -> Any:
    """A ``torch_pruning.DependencyGraph`` of ``model`` (unwrapped), leaving its train/eval modes as they were."""
    module = unwrap_model(model)
    with tracing(module):
        return tp.DependencyGraph().build_dependency(module, example_inputs=example_inputs, verbose=False, **options)
