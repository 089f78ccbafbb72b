"""ONNX export of masked or slimmed models, checked against onnxruntime on the example inputs."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, UsageError
from pruneaware.export.dependencies import require
from pruneaware.structured.graph import preserved_modes, unwrap_model

MIN_OPSET = 17


@dataclass(frozen=True)
class OnnxReport:
    """Where the file went, its size, and how far onnxruntime's outputs are from PyTorch's (None: not checked)."""

    path: Path
    file_size_bytes: int
    opset: int
    parameters: int
    max_abs_diff: float | None


def export_onnx(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    path: str | Path,
    *,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
) -> OnnxReport:
    """Export ``model`` in eval mode to ``path`` and, with ``check``, compare onnxruntime (CPU) with PyTorch.

    The inputs are named ``input_0, input_1, ...`` and the outputs ``output_0, ...``; with
    ``dynamic_batch`` their first dimension is free. The file is validated by ``onnx.checker``
    before it is renamed into place. Train/eval flags are restored afterwards.
    """
    onnx = require("onnx")
    onnxruntime = require("onnxruntime") if check else None
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ConfigError("opset", opset, f"an integer >= {MIN_OPSET}")
    inputs = (example_inputs,) if isinstance(example_inputs, Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(x, Tensor) for x in inputs):
        raise UsageError("example_inputs must be a tensor or a non-empty sequence of tensors")
    model = unwrap_model(model)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with preserved_modes(model):  # no torch.no_grad(): it selects fused kernels ONNX cannot express (attention)
        model.eval()
        expected = [tensor.detach() for tensor in _flatten(model(*inputs))]
        input_names = [f"input_{i}" for i in range(len(inputs))]
        output_names = [f"output_{i}" for i in range(len(expected))]
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(handle)
        try:
            with warnings.catch_warnings():  # the TorchScript exporter is chosen on purpose (no onnxscript needed)
                warnings.filterwarnings("ignore", ".*legacy TorchScript-based ONNX export", DeprecationWarning)
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
                torch.onnx.export(
                    model,
                    inputs,
                    temp_name,
                    dynamo=False,
                    opset_version=opset,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes={name: {0: "batch"} for name in input_names + output_names} if dynamic_batch else None,
                )
            onnx.checker.check_model(temp_name)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
    max_abs_diff = None
    if onnxruntime is not None:
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        feeds = {name: x.detach().cpu().numpy() for name, x in zip(input_names, inputs)}
        actual = session.run(output_names, feeds)
        max_abs_diff = max(
            float((torch.from_numpy(got) - want.cpu()).abs().max()) if want.numel() else 0.0
            for got, want in zip(actual, expected)
        )
    parameters = sum(p.numel() for p in model.parameters())
    return OnnxReport(target, target.stat().st_size, opset, parameters, max_abs_diff)


def _flatten(outputs: Any) -> list[Tensor]:
    """The output tensors in the order the exporter lists them (nested tuples, lists and dicts flattened)."""
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return [tensor for item in outputs for tensor in _flatten(item)]
    raise UsageError(
        f"the model returned {type(outputs).__name__}; ONNX export needs tensors (or tuples, lists, dicts of them)"
    )
