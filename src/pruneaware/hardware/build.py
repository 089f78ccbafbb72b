"""Building latency tables: each distinct layer context timed over sampled widths on the backend, cached on disk."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from rich.progress import Progress
from torch import Tensor, nn

from pruneaware.data.mnist1d import default_cache_dir
from pruneaware.core.errors import ConfigError
from pruneaware.hardware.backends import Backend, Timer, backend as get_backend
from pruneaware.hardware.contention import OthersLoad, drift_warning, load_warning, speed_drift
from pruneaware.hardware.keys import TableKey, device_name
from pruneaware.hardware.layers import LayerContext, capture_contexts
from pruneaware.hardware.probe import fixed_rest_ms, uniform_probe
from pruneaware.hardware.table import LatencyTable, Sweep

log = logging.getLogger(__name__)


def sample_widths(full: int, round_to: int, points: int) -> list[int]:
    """Up to ``points`` widths from the multiples of ``round_to`` below ``full``, evenly spread, always with ``full``."""
    step = round_to if full >= 2 * round_to else 1
    candidates = list(range(step, full, step)) + [full]
    if len(candidates) <= points:
        return candidates
    picks = {round(i * (len(candidates) - 1) / (points - 1)) for i in range(points)}
    return [candidates[i] for i in sorted(picks)]


def batched(example_inputs: Any, batch: int) -> Tensor:
    """The first sample of ``example_inputs`` repeated to ``batch`` rows (tables time the deployed batch size)."""
    if not isinstance(example_inputs, Tensor) or example_inputs.dim() < 1:
        raise ConfigError("example_inputs", type(example_inputs).__name__, "one input tensor with a batch dimension (latency tables time a single-input model)")
    return example_inputs[:1].expand(batch, *example_inputs.shape[1:]).contiguous()


def table_key(backend_name: str, batch: int, dtype: torch.dtype, threads: int | None = None) -> TableKey:
    found = get_backend(backend_name)
    return TableKey(device_name(backend_name), backend_name, found.versions(), batch, str(dtype).removeprefix("torch."), threads or torch.get_num_threads())


@contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Evictor:
    """Reads a buffer as large as the model's weights before each timed call, so the layer reads its weights from
    memory as it does inside the model, whose other layers evict them from cache (for a small model: nothing much)."""

    def __init__(self, working_set: int, most: int = 256 * 2**20, device: str = "cpu"):
        self.buffer = torch.ones(max(min(working_set, most) // 4, 1), device=device)

    def __call__(self) -> None:
        self.buffer.sum()


def _sweep(context: LayerContext, batch: int, timer: Timer, round_to: int, points: int, repeats: int, evict: Callable[[], None]) -> Sweep:
    def ms(in_width: int, out_width: int) -> float:
        return timer(context.build(in_width, out_width), context.inputs(batch, in_width), repeats, evict)

    full = ms(context.in_full, context.out_full)
    if context.depthwise:
        return Sweep(full, [(w, ms(w, w) if w != context.out_full else full) for w in sample_widths(context.out_full, round_to, points)])
    if context.groups > 1:  # grouped (not depthwise): scaled from the full layer as in x out
        return Sweep(full, [(context.out_full, full)], [(context.in_full, full)])
    out = [(w, ms(context.in_full, w) if w != context.out_full else full) for w in sample_widths(context.out_full, round_to, points)]
    inp = [(w, ms(w, context.out_full) if w != context.in_full else full) for w in sample_widths(context.in_full, round_to, points)]
    return Sweep(full, out, inp)


def build_table(
    model: nn.Module, example_inputs: Any, *, backend: str = "torch", batch: int = 1, round_to: int = 8,
    points: int = 8, repeats: int = 15, threads: int | None = None, progress: bool = True,
) -> LatencyTable:
    """Time every distinct layer context of ``model`` over ``points`` widths (multiples of ``round_to``) on ``backend``."""
    if batch < 1:
        raise ConfigError("latency batch", batch, "an integer >= 1")
    inputs = batched(example_inputs, batch)
    key = table_key(backend, batch, inputs.dtype, threads)
    found: Backend = get_backend(backend)
    contexts, per_channel = capture_contexts(model, inputs)
    distinct = {c.signature(): c for c in contexts.values()}
    sweeps: dict[str, Sweep] = {}
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    evict = Evictor(weights, device="cuda" if backend == "cuda" else "cpu")  # the cache of the device that runs the layers
    with OthersLoad() as others, _threads(key.threads), Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"latency table ({backend}, batch {batch})", total=len(distinct) + 3)
        dense = model_copy(model)
        dense_before = found.time_ms(dense, inputs, max(repeats, 10))  # again at the end: did the machine's speed move?
        bar.advance(task)
        for signature, context in distinct.items():
            sweeps[signature] = _sweep(context, batch, found.time_ms, round_to, points, repeats, evict)
            bar.advance(task)
        dense_after = found.time_ms(dense, inputs, max(repeats, 10))
        bar.advance(task)
        probe = uniform_probe(model, inputs, round_to)
        probe_ms = found.time_ms(model_copy(probe), inputs, max(repeats, 10)) if probe is not None else 0.0
        bar.advance(task)
    table = LatencyTable(key, contexts, sweeps, min(dense_before, dense_after), per_channel, others.share,
                         round(speed_drift(dense_before, dense_after), 3))
    if probe is not None:  # the probe's time relative to the dense model's just before it
        table.rest_fixed_ms = fixed_rest_ms(table, probe, probe_ms * table.dense_ms / dense_after)
    for warning in (load_warning(table.others_load, "just built"), drift_warning(table.speed_drift, "just built")):
        if warning:
            log.warning(warning)
    return table


def model_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy to time, so the caller's module (and its device) is left as it was."""
    return copy.deepcopy(model).eval()


def cache_path(key: TableKey, model: nn.Module, example_inputs: Any) -> Path:
    """Where the table of this model (its layer contexts) under ``key`` is cached: ``$PRUNEAWARE_CACHE/latency/...``."""
    import hashlib

    contexts, _ = capture_contexts(model, batched(example_inputs, key.batch))
    fingerprint = hashlib.sha256("\n".join(f"{n}={c.signature()}" for n, c in sorted(contexts.items())).encode()).hexdigest()[:16]
    return default_cache_dir() / "latency" / key.digest() / f"{fingerprint}.json"


def latency_table(
    model: nn.Module, example_inputs: Any, *, backend: str = "torch", batch: int = 1, round_to: int = 8,
    threads: int | None = None, path: str | Path | None = None, build: bool = True, progress: bool = True,
    rebuild: bool = False,
) -> LatencyTable:
    """The model's table for this machine: loaded from ``path`` or the cache when there, else built (and cached).

    A given ``path`` must hold a table measured under the same key (device, backend, versions, batch, dtype, threads).
    A table measured while other processes were busy is still used, with a warning; ``rebuild`` re-measures the cached one.
    """
    key = table_key(backend, batch, batched(example_inputs, 1).dtype, threads)
    if path is not None:
        return _warned(LatencyTable.load(Path(path), key), Path(path))
    cached = cache_path(key, model, example_inputs)
    if cached.exists() and not rebuild:
        return _warned(LatencyTable.load(cached, key), cached)
    if not (build or rebuild):
        raise ConfigError("latency table", str(cached), f"a table for batch {batch}; build it with pruneaware.hardware.build_table(model, inputs, batch={batch})")
    log.info("building the latency table (%s, batch %d); it is cached at %s", backend, batch, cached)
    table = build_table(model, example_inputs, backend=backend, batch=batch, round_to=round_to, threads=threads, progress=progress)
    table.save(cached)
    return table


def _warned(table: LatencyTable, path: Path) -> LatencyTable:
    for warning in (load_warning(table.others_load, f"at {path}"), drift_warning(table.speed_drift, f"at {path}")):
        if warning:
            log.warning(warning)
    return table
