"""bench/peak_memory.py: the peak counts memory touched inside the block and not what was freed before it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
peak_memory = pytest.importorskip("peak_memory")
MIB = 200


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads Linux's /proc")
def test_peak_counts_the_block_only() -> None:
    big = torch.ones(MIB * 2**20 // 4)  # touched: resident
    del big
    peak_memory.release_freed()
    with peak_memory.PeakRSS() as quiet:
        small = torch.ones(2**20)
    with peak_memory.PeakRSS() as busy:
        big = torch.ones(MIB * 2**20 // 4)
        del big
    baseline = peak_memory.resident_mib()
    assert busy.mib - baseline > 0.9 * MIB  # the 200 MiB tensor counted though freed before the block ended
    assert quiet.mib - baseline < 0.5 * MIB  # the earlier 200 MiB, freed and returned, is not
    assert small.numel() == 2**20
