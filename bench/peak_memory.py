"""Peak resident memory of this process over a stretch of code, read from Linux's own high-water mark (no sampling).

``PeakRSS`` resets the kernel's peak (``/proc/self/clear_refs``) on entry and reads ``VmHWM`` on exit;
``release_freed()`` hands freed heap memory back to the OS first, so a peak measured afterwards
counts what the code holds, not what the allocator kept from earlier work (e.g. a whole model
loaded before sharding).
"""

from __future__ import annotations

import ctypes
import gc
import re
from pathlib import Path

STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{STATUS} has no {field} (peak memory is read from Linux's /proc)")
    return int(match.group(1))


def resident_mib() -> float:
    """Resident set size now, in MiB."""
    return _status_kib("VmRSS") / 1024


def release_freed() -> None:
    """Collect garbage and return free heap pages to the OS (glibc ``malloc_trim``), so RSS reflects live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass  # not glibc: nothing to trim


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.mib``: the largest resident set size inside the block."""

    def __enter__(self) -> PeakRSS:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.mib = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.mib = _status_kib("VmHWM") / 1024
