"""Layers outside the traced path: found before channels are cut, and named instead of failing inside torch.

Torch-Pruning builds its dependency graph from one eval-mode forward pass over the example inputs.
A layer that pass never ran (a branch taken only in training mode, or only for some inputs) is not
in the graph: removing channels cuts its neighbours but not it, and the next forward through it
fails deep inside torch (``mat1 and mat2 shapes cannot be multiplied``). Here such a layer is
refused up front when a training-mode pass reaches it, and guarded with a hook that stops the
first forward pass reaching it later (before the first removal if that pass comes earlier).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from pruneaware.core.errors import TraceError
from pruneaware.structured.graph import preserved_modes

FIX = (
    "structured pruning can only cut channels along the path it traced; give example_inputs that take every branch "
    "in eval mode, or prune this model with an unstructured granularity (a 'pruning' section)"
)


def check_single_path(model: nn.Module, example_inputs: Any) -> None:
    """Raise TraceError naming a layer with parameters that training mode runs and the traced eval pass does not;
    then guard every layer the traced pass did not run (``UntracedLayer``)."""
    traced = _layers_run(model, example_inputs, training=False)
    if traced is None:
        return  # the forward pass fails: tracing runs it next and names the failing module
    trained = _layers_run(model, example_inputs, training=True) or []
    names = {id(module): name for name, module in model.named_modules()}
    missing = [names[id(m)] for m in trained if id(m) not in {id(t) for t in traced}]
    if missing:
        raise TraceError(f"{missing[0]!r} runs in training mode but not in eval mode, where the model is traced; {FIX}")
    ran = {id(module) for module in traced}
    for name, module in model.named_modules():
        if _has_parameters(module) and id(module) not in ran and not _guarded(module):
            module.register_forward_pre_hook(UntracedLayer(name or type(model).__name__))


class UntracedLayer:
    """Forward pre-hook on a layer the traced pass did not run: running it raises TraceError naming it (picklable)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, module: nn.Module, args: Any) -> None:
        raise TraceError(f"{self.name!r} ran, but not when the model was traced with example_inputs (data-dependent control flow?); {FIX}")


def _guarded(module: nn.Module) -> bool:
    return any(isinstance(hook, UntracedLayer) for hook in module._forward_pre_hooks.values())


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _layers_run(model: nn.Module, example_inputs: Any, training: bool) -> list[nn.Module] | None:
    """The layers with parameters one forward pass in the given mode runs, in order; None if the pass fails.

    Nothing the pass changes stays changed: modes, buffers (batch-norm statistics) and random number generators.
    """
    ran: list[nn.Module] = []
    handles = [m.register_forward_pre_hook(lambda m, _a: ran.append(m)) for m in model.modules() if _has_parameters(m)]
    try:
        with preserved_modes(model), _buffers_kept(model), torch.random.fork_rng(), torch.no_grad():
            model.train(training)
            _call(model, example_inputs)
    except Exception:
        return None
    finally:
        for handle in handles:
            handle.remove()
    return list({id(m): m for m in ran}.values())


@contextmanager
def _buffers_kept(model: nn.Module) -> Iterator[None]:
    kept = [(buffer, buffer.clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in kept:
                buffer.copy_(value)


def _call(model: nn.Module, example_inputs: Any) -> Any:
    """Call the model as Torch-Pruning does with ``example_inputs``."""
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)
