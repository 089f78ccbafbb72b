"""How busy the rest of the machine was while something was timed: latencies measured beside other work are too high."""

from __future__ import annotations

import os
from pathlib import Path

BUSY_SHARE = 0.2
"""Above this share of the machine's CPU time used by other processes, a latency table is flagged as measured under load."""
DRIFT = 0.1
"""Above this relative change of the dense model's latency between the start and the end of a table's build, the
machine's speed moved while the table was measured (shared caches or memory on a virtual machine, frequency changes):
the table is flagged."""


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from ``/proc/stat``; None where it is unavailable."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    hertz = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq + steal
    return busy / hertz, (busy + idle + iowait) / hertz


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


class OthersLoad:
    """Context manager: the share of the machine's CPU time that *other* processes used while its block ran.

    ``share`` is None where the machine's counters cannot be read (not Linux) or the block was too short to tell.
    """

    def __init__(self) -> None:
        self.share: float | None = None

    def __enter__(self) -> OthersLoad:
        self._machine, self._own = _cpu_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        machine = _cpu_seconds()
        if self._machine is None or machine is None:
            return
        busy, total = machine[0] - self._machine[0], machine[1] - self._machine[1]
        if total <= 0:
            return
        others = busy - (_own_seconds() - self._own)
        self.share = round(min(max(others / total, 0.0), 1.0), 3)


def load_warning(share: float | None, where: str) -> str | None:
    """A warning naming the load and the fix when ``share`` says the table was measured on a busy machine."""
    if share is None or share <= BUSY_SHARE:
        return None
    return (f"the latency table {where} was measured while other processes used {share:.0%} of the CPU, so its times are "
            "likely too high and predictions too pessimistic; rebuild it on an idle machine "
            "(pruneaware.hardware.latency_table(..., rebuild=True), or delete the file)")


def speed_drift(before_ms: float, after_ms: float) -> float:
    """How far the same model's latency moved between two measurements, relative to the faster one."""
    return abs(after_ms - before_ms) / max(min(before_ms, after_ms), 1e-12)


def drift_warning(drift: float | None, where: str) -> str | None:
    """A warning naming the change and the fix when the dense model ran at different speeds before and after the sweeps."""
    if drift is None or drift <= DRIFT:
        return None
    return (f"the latency table {where} timed the dense model {drift:.0%} apart at the start and the end of its build: "
            "the machine's speed changed while the layers were measured (other virtual machines, frequency scaling), so "
            "its layer times disagree with one another; rebuild it when the machine is steady "
            "(pruneaware.hardware.latency_table(..., rebuild=True), or delete the file)")
