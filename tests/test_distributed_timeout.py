"""A frozen peer fails a distributed run after the configured timeout with a clear message, not after gloo's 30 minutes."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta

import pytest
import torch.distributed as dist

from pruneaware.distributed import WorkerFailed, launch
from pruneaware.distributed.timeouts import ENV, resolve_timeout
from pruneaware.core.errors import ConfigError

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")


def _freeze_rank_1() -> None:
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGSTOP)  # frozen: alive, holding its sockets, answering nothing
    dist.barrier()


def test_a_frozen_peer_fails_the_run_after_the_timeout_naming_it_and_the_fix(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules["pruneaware.distributed.launch"], "GRACE_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match="of 2"):
        launch(_freeze_rank_1, 2, start_method="fork", threads=1, timeout=2)
    assert time.monotonic() - started < 60
    error = capfd.readouterr().err
    assert "error (rank 0): rank 0 waited 2 s for another process that never answered" in error
    assert "--timeout SECONDS or PRUNEAWARE_DDP_TIMEOUT" in error


def test_the_timeout_comes_from_the_argument_the_environment_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert resolve_timeout() == timedelta(minutes=10)
    assert resolve_timeout(30) == timedelta(seconds=30)
    monkeypatch.setenv(ENV, "45")
    assert resolve_timeout() == timedelta(seconds=45)
    assert resolve_timeout(timedelta(seconds=5)) == timedelta(seconds=5)
    monkeypatch.setenv(ENV, "soon")
    with pytest.raises(ConfigError, match=ENV):
        resolve_timeout()
    for bad in (0, -1, float("inf"), float("nan"), True):
        with pytest.raises(ConfigError, match="--timeout"):
            resolve_timeout(bad, "--timeout")
