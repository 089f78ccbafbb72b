"""A torchrun job with a Pruner exits with status 0 once training is done, also when the script never destroys its
process group (gloo's worker threads used to abort the process during interpreter shutdown, in about 1 run of 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch.distributed as dist

from pruneaware.distributed import free_port, resolve_sync, teardown

JOB = textwrap.dedent(
    """
    import torch, torch.distributed as dist
    from torch import nn
    from torch.nn import functional as F
    from torch.nn.parallel import DistributedDataParallel
    import pruneaware as pa
    from pruneaware.recipe.shipped import default_recipe_path

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(dist.get_rank() + 1)  # different data on every rank
    x, y = torch.randn(256, 16, generator=generator), torch.randint(0, 4, (256,), generator=generator)
    pruner = pa.Pruner(DistributedDataParallel(model), optimizer, default_recipe_path("structured"),
                       steps_per_epoch=8, epochs=4, example_inputs=x[:32])
    for step in range(32):
        batch = slice(step % 8 * 32, step % 8 * 32 + 32)
        loss = F.cross_entropy(pruner.model(x[batch]), y[batch])
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    pruner.finalize()
    print("trained", dist.get_rank(), flush=True)
    # no destroy_process_group(): many training scripts end like this
    """
)


def run_job(script: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), str(script)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)


@pytest.mark.slow
def test_two_rank_torchrun_job_with_a_pruner_exits_0_ten_times_in_a_row(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    for attempt in range(10):
        finished = run_job(script)
        assert finished.returncode == 0 and "terminate called" not in finished.stderr, f"run {attempt}: {finished.stderr[-3000:]}"
        assert finished.stdout.count("trained") == 2


def test_a_pruner_in_a_process_group_destroys_it_at_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registered = []
    monkeypatch.setattr(teardown, "_registered", False)
    monkeypatch.setattr(teardown.atexit, "register", registered.append)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert resolve_sync(None) is None
        resolve_sync("auto")
        assert registered == [teardown._release], "registered once, whatever sync is"
        registered[0]()  # what the interpreter runs at exit, before it finalizes
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
