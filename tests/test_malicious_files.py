"""Files whose unpickling would run code: every loader of a torch file a user hands us refuses them, and nothing runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from pruneaware.cli.main import main
from pruneaware.distributed.dcp_reader import check_metadata
from pruneaware.core.errors import StateError
from pruneaware.job import checkpoint
from pruneaware.models.weights import load_weights, read_state_dict
from tests.byo_helpers import write_factory, write_recipe


class Payload:
    """Unpickling it writes ``marker``: what a hostile checkpoint would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def hostile_file(path: Path, marker: Path, state: dict[str, object] | None = None) -> Path:
    """``state`` (or a tiny state_dict) saved with torch.save, with the payload beside its tensors."""
    torch.save({**(state or {"weight": torch.zeros(2, 2)}), "payload": Payload(marker)}, path)
    return path


def test_the_payload_runs_when_unpickled_without_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.load(hostile_file(tmp_path / "control.pt", marker), weights_only=False)
    assert marker.read_text() == "ran"  # the files the other tests hand in are live


@pytest.fixture
def factory_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    module = write_factory(tmp_path, "user_code_hostile")
    return write_recipe(tmp_path, model=f"{module}:make_model", dataset=f"{module}:make_data", log_every=4)


def test_resume_refuses_a_checkpoint_that_would_run_code(factory_recipe: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, marker = tmp_path / "run", tmp_path / "ran"
    assert main(["run", str(factory_recipe), "--out", str(out), "--no-dense"]) == 0
    saved = out / "pruned" / "checkpoint.pt"
    hostile_file(saved, marker, torch.load(saved, weights_only=True))  # a real checkpoint, plus the payload
    capsys.readouterr()
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "delete it" in err and "Traceback" not in err
    assert not marker.exists()


def test_pretrained_weights_that_would_run_code_are_refused_from_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    module = write_factory(tmp_path, "user_code_weights")
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    weights, marker = hostile_file(tmp_path / "weights.pt", tmp_path / "ran", model.state_dict()), tmp_path / "ran"
    recipe = write_recipe(tmp_path, model=f"{module}:make_model", dataset=f"{module}:make_data", weights=str(weights))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--no-dense"]) == 2
    err = capsys.readouterr().err
    assert "weights.pt" in err and "state_dict" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("loader", [checkpoint.load, read_state_dict, lambda path: load_weights(nn.Linear(2, 2), path)], ids=["checkpoint", "state_dict", "weights"])
def test_library_loaders_refuse_code_naming_the_file(tmp_path: Path, loader: object) -> None:
    path, marker = tmp_path / "hostile.pt", tmp_path / "ran"
    hostile_file(path, marker)
    with pytest.raises(StateError, match="hostile.pt"):
        loader(path)  # type: ignore[operator]
    assert not marker.exists()


def _dcp_folder(path: Path) -> Path:
    """A real (single-process) torch.distributed.checkpoint folder."""
    import torch.distributed.checkpoint as dcp

    with pytest.warns(UserWarning):  # DCP warns that it saves without a process group
        dcp.save({"model": nn.Linear(3, 2).state_dict(), "note": "x"}, checkpoint_id=str(path))
    return path


def test_sharded_checkpoint_metadata_that_would_run_code_is_refused(tmp_path: Path) -> None:
    from pruneaware.distributed.fsdp_checkpoint import load_sharded

    folder, marker = _dcp_folder(tmp_path / "sharded"), tmp_path / "ran"
    check_metadata(folder / ".metadata")  # DCP's own metadata passes the allowlist
    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(StateError, match=r"\.metadata.*builtins\.exec"):
        load_sharded(folder, nn.Linear(3, 2), None, None)  # type: ignore[arg-type]  # refused before the model is touched
    assert not marker.exists()
