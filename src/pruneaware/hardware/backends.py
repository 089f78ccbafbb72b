"""Timing one module on a deployment backend: torch eager on CPU, onnxruntime on CPU, CUDA (timed with CUDA events)."""

from __future__ import annotations

import importlib.util
import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError

Timer = Callable[..., float]
"""``timer(module, inputs, repeats, before=None)``: ``before()`` runs untimed ahead of each timed forward."""


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Backend:
    """A named way of running a model: whether it is installed here, its version string, and its timer."""

    name: str
    available: Callable[[], bool]
    versions: Callable[[], str]
    time_ms: Timer
    """``time_ms(module, inputs, repeats, before=None)``: the fastest of ``repeats`` forwards after warm-up (the least disturbed by other load)."""
    hint: str


def _torch_cpu(module: nn.Module, inputs: Tensor, repeats: int, before: Callable[[], None] = _nothing) -> float:
    module = module.eval()
    with torch.inference_mode():
        for _ in range(2):
            module(inputs)
        times = []
        for _ in range(repeats):
            before()
            start = time.perf_counter()
            module(inputs)
            times.append(time.perf_counter() - start)
    return 1000.0 * min(times)


def _cuda(module: nn.Module, inputs: Tensor, repeats: int, before: Callable[[], None] = _nothing) -> float:
    """Times on the GPU; a module that lives elsewhere is timed there and moved back, so measuring never moves a model for good."""
    home = next(iter(module.parameters()), torch.empty(0)).device
    module, inputs = module.eval().cuda(), inputs.cuda()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    try:
        with torch.inference_mode():
            for _ in range(3):
                module(inputs)
            torch.cuda.synchronize()
            for _ in range(repeats):
                before()
                start.record()
                module(inputs)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
    finally:
        module.to(home)
    return min(times)


def _onnxruntime(module: nn.Module, inputs: Tensor, repeats: int, before: Callable[[], None] = _nothing) -> float:
    import onnxruntime

    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module.eval(), (inputs,), buffer, input_names=["x"], dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": inputs.numpy()}
    for _ in range(2):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1000.0 * min(times)


def _ort_version() -> str:
    import onnxruntime

    return f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}"


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", lambda: True, lambda: f"torch {torch.__version__}", _torch_cpu, ""),
    "onnxruntime": Backend(
        "onnxruntime", lambda: importlib.util.find_spec("onnxruntime") is not None, _ort_version, _onnxruntime,
        "pip install onnxruntime (and onnx), or use backend: torch",
    ),
    "cuda": Backend(
        "cuda", torch.cuda.is_available, lambda: f"torch {torch.__version__}, cuda {torch.version.cuda}", _cuda,
        "run on a machine with a CUDA GPU and a CUDA build of torch, or use backend: torch",
    ),
}


def backend(name: str) -> Backend:
    """The backend called ``name``, refused with the fix when unknown or not installed here."""
    if name not in BACKENDS:
        raise ConfigError("latency backend", name, sorted(BACKENDS))
    found = BACKENDS[name]
    if not found.available():
        raise ConfigError("latency backend", name, f"a backend available on this machine: {name!r} is not ({found.hint})")
    return found
