"""The teacher: a frozen model run on the student's inputs, its outputs (and chosen hidden states) optionally cached.

A teacher is the dense model at the start of pruning (a frozen copy) or a model the user passes. It
runs in eval mode without gradients, optionally in lower precision (``dtype``); with ``cache`` its
outputs are kept on the CPU, keyed by the bytes of the inputs, so a fixed data set costs one teacher
forward per distinct batch. ``seconds`` and ``calls`` measure what it costs.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.depth.blocks import first_tensor, run
from pruneaware.core.errors import ScopeError

Outputs = dict[str, Tensor]  # "logits" (when the model has them) and one entry per hidden-state layer


def frozen_copy(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``model`` in eval mode with no gradients (in ``dtype`` when given)."""
    teacher = copy.deepcopy(model).eval()
    if dtype is not None:
        teacher.to(dtype)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def logits_of(output: Any) -> Tensor | None:
    """The logits of a model's output: a tensor, or ``.logits`` of a Hugging Face output (None when neither)."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, Tensor) else first_tensor(output) if isinstance(output, tuple) else None


def check_layers(model: nn.Module, layers: Sequence[str], field: str) -> None:
    """Every hidden-state layer name must be a module of ``model`` (exact names)."""
    names = dict(model.named_modules())
    for layer in layers:
        if layer not in names:
            similar = [n for n in names if n and n.split(".")[-1] == layer.split(".")[-1]][:5] or [n for n in names if n][:5]
            raise ScopeError(f"{field}: layer {layer!r} matches no module; module names look like {similar}")


class Capture:
    """Forward hooks keeping the first tensor each named layer outputs, until ``close``."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.values: dict[str, Tensor] = {}
        self._hooked: dict[str, tuple[nn.Module, Any]] = {}
        self.refresh(model, layers)

    def refresh(self, model: nn.Module, layers: Sequence[str] | None = None) -> None:
        """Hook the module now at each name (a removed block's placeholder outputs what reaches that depth)."""
        for name in layers if layers is not None else list(self._hooked):
            module = model.get_submodule(name)
            if name in self._hooked and self._hooked[name][0] is module:
                continue
            if name in self._hooked:
                self._hooked[name][1].remove()
            self._hooked[name] = (module, module.register_forward_hook(self._keep(name)))

    def _keep(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.values[name] = first_tensor(output)  # type: ignore[assignment]
        return hook

    def close(self) -> None:
        for _, handle in self._hooked.values():
            handle.remove()
        self._hooked.clear()


class Teacher:
    """Runs the teacher on the student's inputs: logits and hidden states, timed, optionally cached."""

    def __init__(self, model: nn.Module, layers: Sequence[str], dtype: torch.dtype | None = None, cache: bool = False):
        self.model, self.layers, self.dtype, self.cache = model, tuple(layers), dtype, {} if cache else None
        check_layers(model, self.layers, "distill.teacher_layers")
        self.capture = Capture(model, self.layers)
        self.seconds, self.calls, self.hits = 0.0, 0, 0

    def __call__(self, inputs: Any) -> Outputs:
        key = _key(inputs) if self.cache is not None else None
        if key is not None and key in self.cache:
            self.hits += 1
            device = _device(inputs)
            return {name: value.to(device, non_blocking=True) for name, value in self.cache[key].items()}
        start = time.perf_counter()
        with torch.no_grad():
            output = run(self.model, _cast(inputs, self.dtype))
        found = {"logits": logits_of(output), **{name: self.capture.values.pop(name) for name in self.layers}}
        outputs = {name: value for name, value in found.items() if value is not None}
        self.seconds += time.perf_counter() - start
        self.calls += 1
        if key is not None:
            self.cache[key] = {name: value.detach().cpu() for name, value in outputs.items()}  # type: ignore[index]
        return outputs


def _key(inputs: Any) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for tensor in _tensors(inputs):
        digest.update(str((tensor.shape, tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _tensors(inputs: Any) -> list[Tensor]:
    if isinstance(inputs, Tensor):
        return [inputs]
    if isinstance(inputs, Mapping):
        return [t for key in sorted(inputs) for t in _tensors(inputs[key])]
    if isinstance(inputs, (tuple, list)):
        return [t for value in inputs for t in _tensors(value)]
    return []


def _device(inputs: Any) -> torch.device:
    tensors = _tensors(inputs)
    return tensors[0].device if tensors else torch.device("cpu")


def _cast(inputs: Any, dtype: torch.dtype | None) -> Any:
    """Floating-point inputs in the teacher's dtype (token ids and masks stay as they are)."""
    if dtype is None:
        return inputs
    if isinstance(inputs, Tensor):
        return inputs.to(dtype) if inputs.is_floating_point() else inputs
    if isinstance(inputs, Mapping):
        return {key: _cast(value, dtype) for key, value in inputs.items()}
    if isinstance(inputs, tuple):
        return tuple(_cast(value, dtype) for value in inputs)
    return inputs
