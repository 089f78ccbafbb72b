"""Sharded checkpoints of FSDP2 pruning runs (torch.distributed.checkpoint): bit-exact resume, at the same or another world size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import get_state_dict

import pruneaware as pa
from pruneaware.distributed.fsdp_checkpoint import load_sharded, save_sharded
from pruneaware.core.errors import PruneawareError
from pruneaware.recipe import Recipe
from tests.fsdp_helpers import full_digests, rank_results, run_ranks, sharded_tiny, train_steps, write_result

pytestmark = [pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo"), pytest.mark.slow]
STEPS, SAVE_AT = 12, 5


def recipe(final: float = 0.8) -> Recipe:
    schedule = {"type": "cubic", "final": final, "begin": 0.1, "end": 0.8, "unit": "fraction"}
    return Recipe.from_dict({"name": "ck", "pruning": {"schedule": schedule, "criterion": "movement", "granularity": {"type": "element", "scope": "layer"}}})


def build(final: float = 0.8) -> tuple[torch.nn.Module, torch.optim.Optimizer, pa.Pruner]:
    model = sharded_tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    return model, optimizer, pa.Pruner(model, optimizer, recipe(final), total_steps=STEPS)


def everything(model: torch.nn.Module, optimizer: torch.optim.Optimizer, pruner: pa.Pruner) -> dict[str, str]:
    """Digests of the full model, optimizer state, masks and criterion buffers (gathered from the shards)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    tensors = {f"model {k}": v for k, v in model_state.items()}
    tensors.update({f"optim {k} {s}": v for k, states in optimizer_state["state"].items() for s, v in states.items() if isinstance(v, torch.Tensor)})
    tensors.update({f"mask {k}": v for k, v in pruner.masks.state_dict().items()})
    tensors.update({f"movement {k}": v for k, v in pruner.stage("prune").criterion.buffers.items()})
    return {**full_digests(tensors), "step": str(pruner.step_count)}


def _save(folder: str) -> None:
    model, optimizer, pruner = build()
    train_steps(model, optimizer, range(SAVE_AT))
    save_sharded(Path(folder, "ckpt"), model, optimizer, pruner)
    saved = everything(model, optimizer, pruner)
    train_steps(model, optimizer, range(SAVE_AT, STEPS))
    write_result(folder, {"saved": saved, "end": everything(model, optimizer, pruner)})


def _resume(folder: str) -> None:
    model, optimizer, pruner = build()
    load_sharded(Path(folder, "ckpt"), model, optimizer, pruner)
    loaded = everything(model, optimizer, pruner)
    train_steps(model, optimizer, range(SAVE_AT, STEPS))
    Path(folder, f"resumed{dist.get_world_size()}").mkdir(exist_ok=True)
    write_result(str(Path(folder, f"resumed{dist.get_world_size()}")), {"loaded": loaded, "end": everything(model, optimizer, pruner)})


def _other_recipe(folder: str) -> None:
    model, optimizer, pruner = build(final=0.5)
    try:
        load_sharded(Path(folder, "ckpt"), model, optimizer, pruner)
        message = "loaded"
    except PruneawareError as error:
        message = str(error)
    write_result(folder, {"message": message})


def test_resume_is_bit_exact_at_the_same_and_another_world_size(tmp_path: Path) -> None:
    run_ranks(_save, str(tmp_path), nproc=2)
    original = rank_results(tmp_path)[0]
    run_ranks(_resume, str(tmp_path), nproc=2)
    same = rank_results(tmp_path / "resumed2")
    assert same[0]["loaded"] == original["saved"]
    assert same[0]["end"] == original["end"]  # training continues exactly as the uninterrupted run did
    run_ranks(_resume, str(tmp_path), nproc=4)
    wider = rank_results(tmp_path / "resumed4", nproc=4)
    for rank in wider:
        assert rank["loaded"] == original["saved"]  # every tensor re-sharded for 4 ranks, bit for bit
        assert rank["end"]["step"] == original["end"]["step"]
    mask_keys = [k for k in original["end"] if k.startswith("mask ")]
    assert all(rank["end"][k] == wider[0]["end"][k] for rank in wider for k in mask_keys)  # ranks agree after resuming


def test_a_checkpoint_of_another_recipe_is_refused(tmp_path: Path) -> None:
    run_ranks(_save, str(tmp_path), nproc=2)
    run_ranks(_other_recipe, str(tmp_path), nproc=2)
    for result in rank_results(tmp_path):
        assert "different recipe" in result["message"]
