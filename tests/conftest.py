"""Shared fixtures: a tiny recipe file for end-to-end runs of the main job."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

TINY_RUN = {
    "version": 1,
    "name": "tiny",
    "pruning": {
        "criterion": "magnitude",
        "granularity": {"type": "element", "scope": "global"},
        "schedule": {"type": "cubic", "final": 0.8, "begin": 0.0, "end": 40, "every": 5, "unit": "step"},
    },
    "train": {"dataset": "digits", "model": "mlp", "epochs": 4, "batch_size": 64, "lr": 0.003, "seed": 3},
}


@pytest.fixture
def tiny_run_file(tmp_path: Path) -> Path:
    """A recipe file training an MLP on scikit-learn digits for a few seconds."""
    spec = {**TINY_RUN, "pruning": {**TINY_RUN["pruning"], "schedule": {**TINY_RUN["pruning"]["schedule"], "end": 40}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Tiny models: intra-op threads only add contention, so tests run on one (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
