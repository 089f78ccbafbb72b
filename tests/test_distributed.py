"""Data-parallel pruning on 2 gloo processes: same masks and channel removals on every rank, one checkpoint writer, resume at another world size.

Each test forks 2 ranks (``pruneaware.distributed.launch``); the ranks write what they saw as
JSON and the assertions run here, comparing the ranks' SHA-256 digests of masks and weights.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo  # noqa: F401  DDP imports it on first use (seconds); once here spares every forked rank the cost
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

import pruneaware as pa
from pruneaware.cli import run_command
from pruneaware.cli.main import main
from pruneaware.distributed import RankZeroSync, WorkerFailed, digests, launch, save_on_main
from pruneaware.job import checkpoint
from pruneaware.job.run import prepare_run_directory, run_job
from pruneaware.job.spec import RunSpec
from tests.conftest import TINY_RUN
from tests.helpers import ThreeLayerMLP, random_batches

NPROC = 2
STEPS = 12
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")


def run_ranks(fn: Any, *args: Any, nproc: int = NPROC) -> None:
    """``fn(*args)`` on ``nproc`` forked ranks of one gloo group (fork: this process runs torch single-threaded)."""
    launch(fn, nproc, args, start_method="fork", threads=1, timeout=timedelta(seconds=120))


def rank_results(folder: Path, nproc: int = NPROC) -> list[dict[str, Any]]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(nproc)]


def write_result(folder: Path, result: dict[str, Any]) -> None:
    (folder / f"rank{dist.get_rank()}.json").write_text(json.dumps(result))


def joint_digest(tensors: dict[str, torch.Tensor]) -> str:
    return "|".join(f"{name}:{value}" for name, value in sorted(digests(tensors).items()))


class RecordingSync(RankZeroSync):
    """The real sync, also keeping what this rank proposed before adopting rank 0's decision."""

    def __init__(self) -> None:
        super().__init__()
        self.proposed: list[str] = []

    def masks(self, masks: Any, params: Any) -> dict[str, torch.Tensor]:
        self.proposed.append(joint_digest(dict(masks)))
        return super().masks(masks, params)

    def choice(self, value: Any) -> Any:
        self.proposed.append(repr(value))
        return super().choice(value)


# -- masks agree at every pruning step, whatever the criterion ---------------------------------------------


def _train_with_criterion(criterion: str, folder: str) -> None:
    rank = dist.get_rank()
    torch.manual_seed(0)
    bare = ThreeLayerMLP()
    model = DistributedDataParallel(bare)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    options = {"seed": rank} if criterion == "random" else {}  # a generator seeded per rank, as a user might
    recipe = {"pruning": {"criterion": criterion, "criterion_options": options,
                          "schedule": {"type": "cubic", "final": 0.7, "begin": 2, "end": 10, "every": 2, "unit": "step"}}}
    sync = RecordingSync()
    own_data = random_batches(STEPS, 20, 4, seed=100 + rank)  # each rank its own shard, and SNIP its own calibration batch
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=STEPS, calibration_data=own_data[:1], loss_fn=F.cross_entropy, sync=sync)
    masks, weights = [], []
    for inputs, targets in own_data:
        loss = F.cross_entropy(pruner.model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        masks.append(joint_digest(pruner.masks.masks))
        weights.append(joint_digest(dict(bare.named_parameters())))
    write_result(Path(folder), {"masks": masks, "weights": weights, "proposed": sync.proposed, "sparsity": pruner.masks.sparsity()})


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "movement", "random", "snip"])
def test_masks_are_identical_on_every_rank_after_every_pruning_step(criterion: str, tmp_path: Path) -> None:
    run_ranks(_train_with_criterion, criterion, str(tmp_path))
    first, second = rank_results(tmp_path)
    assert first["sparsity"] == pytest.approx(0.7, abs=0.01), "the schedule did not prune"
    assert len(first["proposed"]) == 5, "one agreement per pruning step (2, 4, 6, 8, 10), none in between"
    assert first["masks"] == second["masks"], "ranks hold different masks"
    assert first["weights"] == second["weights"], "ranks hold different weights"
    proposals_differ = first["proposed"] != second["proposed"]
    if criterion in ("random", "snip"):
        assert proposals_differ, "per-rank seeds/calibration batches should have scored differently before the broadcast"
    else:  # the same weights, and gradients DDP already averaged: every rank proposes the same masks
        assert not proposals_differ


def _train_unwrapped_with_verification(folder: str) -> None:
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = ThreeLayerMLP()  # no DDP: each rank trains on its own data and the weights drift apart
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    recipe = {"pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 2, "unit": "step"}}}
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=4, sync=RankZeroSync(verify=True))
    error = ""
    try:
        for inputs, targets in random_batches(4, 20, 4, seed=100 + rank):
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    except pa.StateError as caught:
        error = str(caught)
    write_result(Path(folder), {"error": error, "step": pruner.step_count})


def test_verify_mode_names_the_parameter_that_differs_between_ranks(tmp_path: Path) -> None:
    run_ranks(_train_unwrapped_with_verification, str(tmp_path))
    for result in rank_results(tmp_path):
        assert "differ between ranks" in result["error"] and "fc1.weight" in result["error"]
        assert result["step"] == 2, "the check runs at the pruning step"


# -- structured surgery under DDP -----------------------------------------------------------------------


def _train_structured(folder: str) -> None:
    rank = dist.get_rank()
    torch.manual_seed(0)
    bare = ThreeLayerMLP()
    torch.manual_seed(100 + rank)  # random importance draws from the global generator: each rank would pick other channels
    first_wrapper = DistributedDataParallel(bare)
    optimizer = torch.optim.SGD(first_wrapper.parameters(), lr=0.05, momentum=0.9)
    recipe = {"structured": {"importance": "random", "schedule": {"type": "linear", "final": 0.5, "begin": 2, "end": 6, "every": 2, "unit": "step"}}}
    sync = RecordingSync()
    own_data = random_batches(STEPS, 20, 4, seed=100 + rank)
    pruner = pa.Pruner(first_wrapper, optimizer, recipe, total_steps=STEPS, example_inputs=own_data[0][0], sync=sync)
    wrappers, weights, losses = [], [], []
    for inputs, targets in own_data:
        loss = F.cross_entropy(pruner.model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        wrappers.append(pruner.model)  # kept alive, so identities are not reused
        weights.append(joint_digest(dict(bare.named_parameters())))
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    try:
        first_wrapper(own_data[0][0])
        stale_refused = False
    except pa.UsageError:
        stale_refused = True
    write_result(Path(folder), {
        "proposed": sync.proposed,
        "history": repr(pruner.channels.state_dict()["history"]),
        "shapes": {name: list(p.shape) for name, p in bare.named_parameters()},
        "weights": weights,
        "losses": losses,
        "wrappers_built": len({id(wrapper) for wrapper in wrappers}),
        "wraps_bare_model": pruner.model.module is bare,
        "optimizer_holds_model_parameters": optimized == {id(p) for p in bare.parameters()},
        "stale_refused": stale_refused,
    })


def test_structured_removal_under_ddp_same_channels_rebuilt_wrapper_training_continues(tmp_path: Path) -> None:
    run_ranks(_train_structured, str(tmp_path))
    first, second = rank_results(tmp_path)
    assert first["proposed"] != second["proposed"], "per-rank random importance should have ranked differently before the broadcast"
    assert first["history"] == second["history"] and first["history"] != "[]"
    assert first["shapes"] == second["shapes"]
    assert first["shapes"]["fc1.weight"][0] < 32 and first["shapes"]["fc2.weight"][0] < 40, "no channels were removed"
    assert first["weights"] == second["weights"], "ranks drifted apart"
    assert first["weights"][-1] != first["weights"][5], "training did not continue after the last removal (step 6)"
    for result in (first, second):
        assert result["wrappers_built"] == 3, "the first wrapper, rebuilt after each removal (steps 4 and 6; step 2 is at ratio 0)"
        assert result["wraps_bare_model"] and result["optimizer_holds_model_parameters"] and result["stale_refused"]
        assert all(loss == loss for loss in result["losses"])


# -- checkpoints: rank 0 writes, the others wait; resume at another world size --------------------------


def _save_on_main_and_read(folder: str) -> None:
    path = Path(folder) / "state.pt"
    writes: list[str] = []
    original = checkpoint.atomic_save

    def logged(obj: Any, target: Any) -> None:
        writes.append(str(target))
        original(obj, target)

    checkpoint.atomic_save = logged
    try:
        save_on_main({"rank": torch.tensor(dist.get_rank())}, path)
    finally:
        checkpoint.atomic_save = original
    complete = int(torch.load(path)["rank"]) == 0  # right after the barrier, on every rank
    write_result(Path(folder), {"writes": writes, "complete": complete})


def test_save_on_main_writes_once_and_every_rank_finds_it_complete(tmp_path: Path) -> None:
    run_ranks(_save_on_main_and_read, str(tmp_path))
    first, second = rank_results(tmp_path)
    assert first["writes"] == [str(tmp_path / "state.pt")] and second["writes"] == []
    assert first["complete"] and second["complete"]


class Crash(Exception):
    pass


def _crash_at(step: int) -> Any:
    def callback(current: int) -> None:
        if current == step:
            raise Crash(step)

    return callback


RESUME_SPEC = {
    **TINY_RUN,
    "pruning": {**TINY_RUN["pruning"], "schedule": {**TINY_RUN["pruning"]["schedule"], "end": 80}},  # pruning goes on after the crash
    "train": {**TINY_RUN["train"], "dense_baseline": False},
}
CRASH_STEP = 50  # epoch 3 of 4 (23 steps each): resumes from the epoch-2 checkpoint at step 46


def _job(directory: str, crash_step: int | None, log: str | None) -> None:
    """The main job on this rank (crashing at ``crash_step`` if given), logging which rank writes files."""
    writes: list[str] = []
    original = checkpoint.atomic_save

    def logged(obj: Any, target: Any) -> None:
        writes.append(Path(target).name)
        original(obj, target)

    checkpoint.atomic_save = logged
    try:
        run_job(RunSpec.from_mapping(RESUME_SPEC), Path(directory), callbacks=[_crash_at(crash_step)] if crash_step else [], latency_batches=())
    except Crash:
        pass
    finally:
        checkpoint.atomic_save = original
    if log is not None:
        write_result(Path(log), {"writes": writes})


def _two_process_runs(straight: str, crashed: str, log: str) -> None:
    _job(straight, None, None)
    _job(crashed, CRASH_STEP, log)


def _prepared(folder: Path) -> Path:
    prepare_run_directory(RunSpec.from_mapping(RESUME_SPEC), folder)
    return folder


def assert_same_masks_and_close_weights(expected_dir: Path, actual_dir: Path) -> None:
    """Masks identical; weights equal up to the summation order of the gradient, which depends on the world size."""
    expected, actual = torch.load(expected_dir / "pruned_model.pt"), torch.load(actual_dir / "pruned_model.pt")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name] != 0, actual[name] != 0), name
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5)
    scope = [actual[name] for name in ("1.weight", "3.weight")]  # the classifier (5.weight) stays dense
    assert sum(int((w == 0).sum()) for w in scope) / sum(w.numel() for w in scope) == pytest.approx(0.8, abs=1e-3)


def test_two_process_run_checkpoints_from_rank_0_only_and_resumes_with_one(tmp_path: Path) -> None:
    straight, crashed, log = _prepared(tmp_path / "straight"), _prepared(tmp_path / "crashed"), tmp_path / "log"
    log.mkdir()
    run_ranks(_two_process_runs, str(straight), str(crashed), str(log))
    first, second = rank_results(log)
    assert first["writes"] == ["checkpoint.pt", "checkpoint.pt"] and second["writes"] == [], "rank 0 writes each epoch's checkpoint, rank 1 nothing"
    assert torch.load(crashed / "pruned" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    run_job(RunSpec.from_mapping(RESUME_SPEC), crashed, latency_batches=())  # one process, no process group
    assert_same_masks_and_close_weights(straight, crashed)


def test_one_process_run_resumes_with_two(tmp_path: Path) -> None:
    straight, crashed = _prepared(tmp_path / "straight"), _prepared(tmp_path / "crashed")
    run_job(RunSpec.from_mapping(RESUME_SPEC), straight, latency_batches=())
    with pytest.raises(Crash):
        run_job(RunSpec.from_mapping(RESUME_SPEC), crashed, callbacks=[_crash_at(CRASH_STEP)], latency_batches=())
    run_ranks(_job, str(crashed), None, None)
    assert_same_masks_and_close_weights(straight, crashed)


def _fail_on_rank_1() -> None:
    if dist.get_rank() == 1:
        raise pa.StateError("rank 1 cannot go on")
    dist.barrier()  # rank 0 waits for a rank that never comes: the launcher must stop it


def test_a_failing_rank_stops_the_others_and_fails_in_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(WorkerFailed, match="of 2"):  # rank 1's exit, or rank 0's broken barrier: whichever the launcher sees first
        run_ranks(_fail_on_rank_1)
    assert "error (rank 1): rank 1 cannot go on" in capfd.readouterr().err


# -- pruneaware run --nproc ------------------------------------------------------------------------------


def test_run_with_nproc_2_trains_distributed_and_writes_one_report(
    tiny_run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run_command, "launch", functools.partial(launch, start_method="fork", threads=1))  # the CLI spawns; forking is faster here
    out = tmp_path / "run"
    assert main(["run", str(tiny_run_file), "--out", str(out), "--epochs", "2", "--nproc", "2"]) == 0
    printed = capfd.readouterr()
    assert printed.out.count("report: ") == 1 and printed.out.count("test accuracy") == 1, "rank 0 alone reports"
    assert (out / "report.md").is_file() and (out / "summary.json").is_file()
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == 4, "each of 2 epochs of 2 phases evaluated once, not once per rank"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruned"]["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_nproc_beyond_the_batch_size_fails_in_one_line(tiny_run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tiny_run_file), "--out", str(tmp_path / "run"), "--nproc", "65"]) == 2
    assert "--nproc: got 65; expected from 1 to train.batch_size (64)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists(), "nothing is created before the arguments are checked"


@pytest.mark.slow
def test_run_with_nproc_2_spawns_fresh_processes_from_the_command_line(tiny_run_file: Path, tmp_path: Path) -> None:
    """The real path: spawned ranks import everything anew (tens of seconds on a busy 2-core machine)."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pruneaware.cli.main", "run", str(tiny_run_file), "--out", str(out), "--epochs", "2", "--no-dense", "--nproc", "2"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.count("report: ") == 1 and (out / "report.md").is_file()
