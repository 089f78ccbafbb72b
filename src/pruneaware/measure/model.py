"""Model measurements for reports and benchmarks: parameters, MACs, stored size and latency."""

from __future__ import annotations

import gzip
import io
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from pruneaware.core.errors import ConfigError

WEIGHTED_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
"""Layers whose MACs scale with their weight's density under a perfect sparse kernel."""


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates of one forward pass: as run densely, and as a perfect sparse kernel would run them."""

    dense: int
    effective: int


@dataclass(frozen=True)
class SizeReport:
    """Bytes of a saved state dict, raw and gzip-compressed (zeros from pruning compress well)."""

    raw: int
    compressed: int


@dataclass(frozen=True)
class LatencyReport:
    """Forward-pass wall time over ``repeats`` timed runs of one batch."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    batch_size: int
    samples_ms: tuple[float, ...] = field(default=(), repr=False)
    """Every timed forward in order; from ``compare_latency``, sample i of two models ran in the same round."""


def count_parameters(model: nn.Module) -> int:
    """Total number of parameter elements."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Number of parameter elements that are exactly nonzero: what sparsity leaves behind."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def count_macs(model: nn.Module, example_input: Tensor) -> MacCount:
    """MACs (FLOPs / 2, from torch's FlopCounterMode) of one eval-mode forward, dense and density-scaled."""
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), torch.no_grad(), counter:
        model(example_input)
    per_module = counter.get_flop_counts()
    dense = counter.get_total_flops() // 2
    root = type(model).__name__  # FlopCounterMode names modules "<RootClass>.<qualified.name>"
    saved = 0
    for name, module in model.named_modules():
        if not isinstance(module, WEIGHTED_LAYERS):
            continue
        macs = sum(per_module.get(f"{root}.{name}" if name else root, {}).values()) // 2
        weight = module.weight.detach()
        saved += macs - macs * int(torch.count_nonzero(weight)) // weight.numel()
    return MacCount(dense=dense, effective=dense - saved)


def state_dict_size_bytes(model: nn.Module) -> SizeReport:
    """Size of ``torch.save(model.state_dict())`` in memory, and of the same bytes gzip-compressed (level 6)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    return SizeReport(raw=len(raw), compressed=len(gzip.compress(raw, compresslevel=6, mtime=0)))


def measure_latency(
    model: nn.Module,
    example_input: Tensor,
    *,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
) -> LatencyReport:
    """Time eval-mode forwards of ``example_input`` after ``warmup`` untimed ones, optionally with ``threads`` threads."""
    return compare_latency({"model": model}, example_input, warmup=warmup, repeats=repeats, threads=threads, rounds=1)["model"]


def compare_latency(
    models: Mapping[str, nn.Module],
    example_input: Tensor,
    *,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
    rounds: int = 4,
    backend: str = "torch",
) -> dict[str, LatencyReport]:
    """Time several models side by side: ``rounds`` interleaved passes over the models, so drift in
    machine load or clock speed affects them all alike. Each model gets ``repeats`` timed forwards in all.
    ``backend`` other than torch eager (``onnxruntime``, ``cuda``) prepares each model there once (one session)."""
    if warmup < 0:
        raise ConfigError("warmup", warmup, "an integer >= 0")
    if repeats < 1 or rounds < 1:
        raise ConfigError("repeats", repeats, "an integer >= 1, with rounds >= 1")
    if threads is not None and threads < 1:
        raise ConfigError("threads", threads, "None or an integer >= 1")
    previous_threads = torch.get_num_threads()
    times_ms: dict[str, list[float]] = {name: [] for name in models}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        runners = _prepared(models, example_input, backend)
        for round_index in range(rounds):
            for name, model in models.items():
                count = repeats // rounds + (round_index < repeats % rounds)
                warm = warmup if round_index == 0 else 1
                times_ms[name] += _time_forwards(model, example_input, warm, count) if runners is None else _time_calls(runners[name], warm, count)
    finally:
        torch.set_num_threads(previous_threads)
    return {name: _latency_report(times, int(example_input.shape[0])) for name, times in times_ms.items()}


def _prepared(models: Mapping[str, nn.Module], example_input: Tensor, backend: str) -> dict[str, Callable[[], object]] | None:
    """Each model prepared once on a deployment backend (``pruneaware.hardware``), or None for torch eager."""
    if backend == "torch":
        return None
    from pruneaware.hardware.backends import backend as deployment_backend

    found = deployment_backend(backend)
    return {name: found.runner(model, example_input) for name, model in models.items()}


def _time_forwards(model: nn.Module, example_input: Tensor, warmup: int, count: int) -> list[float]:
    with _eval_mode(model), torch.no_grad():
        synchronize = torch.cuda.synchronize if example_input.is_cuda else (lambda: None)  # CUDA kernels run asynchronously

        def forward() -> None:
            model(example_input)
            synchronize()

        return _time_calls(forward, warmup, count)


def _time_calls(run: Callable[[], object], warmup: int, count: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _latency_report(times_ms: list[float], batch_size: int) -> LatencyReport:
    p10, median, p90 = np.percentile(times_ms, [10, 50, 90])
    return LatencyReport(float(median), float(p10), float(p90), len(times_ms), batch_size, tuple(times_ms))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own training flag."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
