"""Timing one module on a deployment backend: torch eager on CPU, onnxruntime on CPU, CUDA (timed with CUDA events)."""

from __future__ import annotations

import copy
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
Runner = Callable[[], object]
"""One forward of a prepared model (a module in eval mode, an inference session) on fixed inputs."""


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
    runner: Callable[[nn.Module, Tensor], Runner]
    """``runner(module, inputs)``: the model prepared once on this backend, returned as a call that runs one forward."""


def _fastest_ms(run: Callable[[], object], repeats: int, before: Callable[[], None], warmup: int = 2) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * min(times)


def _torch_runner(module: nn.Module, inputs: Tensor) -> Runner:
    module = module.eval()

    def run() -> object:
        with torch.inference_mode():
            return module(inputs)

    return run


def _torch_cpu(module: nn.Module, inputs: Tensor, repeats: int, before: Callable[[], None] = _nothing) -> float:
    module = module.eval()
    with torch.inference_mode():  # entered once: a per-call context would weigh on microsecond layers
        return _fastest_ms(lambda: module(inputs), repeats, before)


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


def _cuda_runner(module: nn.Module, inputs: Tensor) -> Runner:
    """A synchronised forward of a GPU copy of ``module`` (the caller's module stays where it is)."""
    module, inputs = copy.deepcopy(module).eval().cuda(), inputs.cuda()

    def run() -> object:
        with torch.inference_mode():
            output = module(inputs)
        torch.cuda.synchronize()
        return output

    return run


def _onnxruntime_runner(module: nn.Module, inputs: Tensor) -> Runner:
    """An onnxruntime CPU session of ``module`` exported at ``inputs``' shape (its graph optimisations on: BatchNorm folded)."""
    import onnxruntime

    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module.eval(), (inputs,), buffer, input_names=["x"], dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle workers spinning for work would steal the cores of whichever session runs next (two models timed side by
    # side, or a table's layers one after another): measured on 2 cores, spinning made ResNet-50 1.7x slower at batch 1.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": inputs.numpy()}
    return lambda: session.run(None, feed)


def _onnxruntime(module: nn.Module, inputs: Tensor, repeats: int, before: Callable[[], None] = _nothing) -> float:
    return _fastest_ms(_onnxruntime_runner(module, inputs), repeats, before)


def _ort_version() -> str:
    import onnxruntime

    return f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, no spinning"


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", lambda: True, lambda: f"torch {torch.__version__}", _torch_cpu, "", _torch_runner),
    "onnxruntime": Backend(
        "onnxruntime", lambda: importlib.util.find_spec("onnxruntime") is not None, _ort_version, _onnxruntime,
        "pip install onnxruntime (and onnx), or use backend: torch", _onnxruntime_runner,
    ),
    "cuda": Backend(
        "cuda", torch.cuda.is_available, lambda: f"torch {torch.__version__}, cuda {torch.version.cuda}", _cuda,
        "run on a machine with a CUDA GPU and a CUDA build of torch, or use backend: torch", _cuda_runner,
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

