"""Prepare a (pruned) model for quantization-aware training with torchao's PT2E flow.

The model is captured by ``torch.export`` with a dynamic batch dimension and fake quantization
is inserted by the x86 quantizer. The captured module reads the model's own parameter tensors
under the same names, so an optimizer, a ``Pruner`` and its masks built over the model keep
working on it unchanged: masks applied after each optimizer step are what the fake quantizers see.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, StateError, TraceError
from pruneaware.quantization import toolkit
from pruneaware.quantization.modes import allow_mode_switch
from pruneaware.structured.graph import unwrap_model

BACKENDS = ("x86",)


def prepare_qat(model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...], *, backend: str = "x86") -> torch.fx.GraphModule:
    """A fake-quantized module to train in place of ``model``; its parameters are ``model``'s own tensors.

    ``example_inputs`` needs a batch of at least 2 (the batch dimension is kept dynamic, and
    ``torch.export`` fixes dimensions of size 1). The result switches modes with ``.train()`` and
    ``.eval()`` like any module and is converted with ``convert_int8``.
    """
    if backend not in BACKENDS:
        raise ConfigError("backend", backend, BACKENDS)
    inputs = as_tuple(example_inputs)
    if inputs[0].dim() == 0 or inputs[0].shape[0] < 2:
        raise ConfigError("example_inputs", tuple(inputs[0].shape), "a batch of at least 2 samples (the batch dimension stays dynamic)")
    model = unwrap_model(model)
    ao = toolkit.pt2e()
    was_training = model.training
    model.train()  # fake quantization trains with batch statistics where the model has norms
    try:
        captured = torch.export.export(model, inputs, dynamic_shapes=batch_dynamic(inputs)).module()
    except Exception as error:  # torch.export raises many types; the first line says what it could not trace
        raise TraceError(f"torch.export cannot capture {type(model).__name__} for quantization-aware training: {_first_line(error)}") from None
    finally:
        model.train(was_training)
    quantizer = ao.X86Quantizer().set_global(ao.x86_config(is_qat=True))
    try:
        prepared = ao.prepare_qat(captured, quantizer)
    except (ValueError, RuntimeError, AssertionError) as error:
        raise TraceError(
            f"the x86 quantizer cannot annotate {type(model).__name__}: {_first_line(error)}; a known cause is one activation "
            "module called at two places in forward (e.g. a shared nn.ReLU): give each call its own module"
        ) from None
    allow_mode_switch(prepared)
    check_shares_parameters(model, prepared)
    prepared.train()  # torchao's switch (where the graph needs one) returns None, so no chaining
    return prepared


def check_shares_parameters(model: nn.Module, prepared: nn.Module) -> None:
    """Raise StateError unless ``prepared`` holds every parameter of ``model`` as the same tensor under the same name.

    That identity is what keeps optimizer state, pruning masks and checkpoints valid across QAT.
    """
    for name, param in model.named_parameters():
        try:
            same = prepared.get_parameter(name) is param
        except AttributeError:
            same = False
        if not same:
            raise StateError(
                f"the QAT module does not hold parameter {name!r} of the model itself; masks and the optimizer "
                "would no longer reach the weights it trains (report this with the model's definition)"
            )


def as_tuple(example_inputs: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def batch_dynamic(inputs: tuple[Tensor, ...]) -> tuple[dict[int, object], ...]:
    """Dynamic shapes for ``torch.export``: dimension 0 of every input is one shared batch dimension."""
    batch = torch.export.Dim("batch")
    return tuple({0: batch} for _ in inputs)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
