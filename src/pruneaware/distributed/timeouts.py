"""How long a rank waits for its peers in a collective, and a clear error when one never answers.

Gloo's own default is 30 minutes: a peer that is stopped (SIGSTOP, a debugger) or hung keeps every
other rank waiting that long. pruneaware's launcher and example use ``DEFAULT_SECONDS`` instead,
configurable with ``--timeout`` or the ``PRUNEAWARE_DDP_TIMEOUT`` environment variable (seconds).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from pruneaware.core.errors import ConfigError, StateError

ENV = "PRUNEAWARE_DDP_TIMEOUT"
DEFAULT_SECONDS = 600.0


def resolve_timeout(value: float | timedelta | None = None, field: str = "timeout") -> timedelta:
    """``value`` (seconds or a timedelta) as a timedelta; None: ``$PRUNEAWARE_DDP_TIMEOUT`` or ``DEFAULT_SECONDS``."""
    if value is None:
        raw = os.environ.get(ENV)
        if raw is None:
            return timedelta(seconds=DEFAULT_SECONDS)
        field, value = ENV, _seconds(raw, ENV)
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(field, value, "a positive, finite number of seconds")
    return timedelta(seconds=seconds)


def _seconds(raw: str, field: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(field, raw, "a positive, finite number of seconds") from None


def is_timeout(error: BaseException) -> bool:
    """Whether ``error`` is a collective that gave up waiting for a peer (gloo: ``Timed out waiting ...ms``)."""
    return isinstance(error, RuntimeError) and "timed out" in str(error).lower()


@contextmanager
def peers_answer_within(timeout: timedelta, rank: int) -> Iterator[None]:
    """Turn a collective's timeout into a StateError saying which rank waited, how long, and how to wait longer."""
    try:
        yield
    except RuntimeError as error:
        if not is_timeout(error):
            raise
        raise StateError(
            f"rank {rank} waited {timeout.total_seconds():g} s for another process that never answered (stopped, hung or "
            f"killed); the run is stopped. If a step or checkpoint really takes that long, raise the limit with --timeout "
            f"SECONDS or {ENV}"
        ) from None
