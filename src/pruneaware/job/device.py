"""Where and how the job computes: the device, mixed precision on CUDA, thread count and deterministic kernels."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from pruneaware.core.errors import ConfigError


def select_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; asking for CUDA on a machine without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError("train.device", name, "'auto', 'cpu', 'cuda' or 'cuda:<index>'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device", name, "'cpu' or 'auto': torch sees no CUDA device on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError("train.device", name, "'auto', 'cpu', 'cuda' or 'cuda:<index>'")
    return device


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA (no loss scaling needed); full precision on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def compute_settings(threads: int | None, deterministic: bool, device: torch.device) -> Iterator[None]:
    """Fixed intra-op threads for the job and, on CUDA, deterministic algorithms; restored afterwards.

    CPU kernels are already repeatable at a fixed thread count, and switching the flag imports torch's
    compiler stack (seconds), so the flag is only set where it changes results.
    """
    previous_threads, previous_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    deterministic = deterministic and device.type == "cuda"
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible matmuls
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if deterministic != previous_deterministic:
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
        yield
    finally:
        torch.set_num_threads(previous_threads)
        if deterministic != previous_deterministic:
            torch.use_deterministic_algorithms(previous_deterministic)
