"""Pruning under FSDP2 (fully_shard per block and at the root) on gloo ranks: masks on shards, agreed cuts, refusals.

Each test forks 2 or 4 ranks; the ranks write what they saw as JSON and the assertions run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Shard, distribute_tensor

import pruneaware as pa
from pruneaware.distributed.fsdp_masks import ShardedMaskSet, like_param
from pruneaware.distributed.fsdp_select import sharded_element_masks
from pruneaware.distributed.fsdp import is_sharded
from pruneaware.core.errors import ConfigError, PruneawareError
from pruneaware.granularity import Element
from pruneaware.recipe import Recipe
from tests.fsdp_helpers import Tiny, full, full_digests, rank_results, run_ranks, sharded_tiny, train_steps, write_result

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
STEPS = 10


def recipe(criterion: str = "magnitude", granularity: dict[str, Any] | None = None, **extra: Any) -> Recipe:
    if granularity is not None and granularity["type"] == "nm":
        extra.setdefault("scope", {"exclude": ["blocks.*.down"]})  # 2:4 needs inputs divisible by 4 (HIDDEN is 18)
    schedule = {"type": "cubic", "final": 0.8 if granularity is None else 0.5, "begin": 0.1, "end": 0.6, "unit": "fraction"}
    return Recipe.from_dict({"name": "t", "pruning": {"schedule": schedule, "criterion": criterion, "granularity": granularity or {"type": "element", "scope": "global"}}, **extra})


# -- the distributed selection is the unsharded one, ties and uneven shards included ------------------------


def _selection(folder: str) -> None:
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    generator = torch.Generator().manual_seed(7)  # the same full scores on every rank
    shapes = {"a": (18, 5), "b": (3, 4), "c": (7, 2, 3)}  # uneven shards, and fewer rows than ranks
    cases = []
    for kind in ("continuous", "ties", "pruned"):
        scores = {}
        for name, shape in shapes.items():
            score = torch.randn(shape, generator=generator)
            if kind == "ties":
                score = torch.randint(0, 4, shape, generator=generator).float()
            if kind == "pruned":
                score[torch.rand(shape, generator=generator) < 0.3] = float("-inf")
            scores[name] = score
        for scope in ("layer", "global", "erk"):
            for sparsity in (0.0, 0.5, 0.8):
                expected = Element(scope=scope).masks(scores, sparsity)
                sharded = {name: distribute_tensor(score, mesh, [Shard(0)]) for name, score in scores.items()}
                local = {name: score.to_local() for name, score in sharded.items()}
                shards = sharded_element_masks(local, {n: s.shape for n, s in sharded.items()}, Element(scope=scope)._layer_sparsities(scores, sparsity) if scope != "global" else sparsity)
                got = {name: like_param(mask, sharded[name]).full_tensor() for name, mask in shards.items()}
                cases.append([kind, scope, sparsity, all(torch.equal(got[n], expected[n]) for n in shapes)])
    write_result(folder, {"cases": cases})


@pytest.mark.parametrize("nproc", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_distributed_selection_equals_the_unsharded_cut(tmp_path: Path, nproc: int) -> None:
    run_ranks(_selection, str(tmp_path), nproc=nproc)
    for result in rank_results(tmp_path, nproc):
        assert [case for case in result["cases"] if not case[-1]] == []
        assert len(result["cases"]) == 27


# -- training: the failure of the issue, fixed; masks enforced on shards and equal to an unsharded run's ------


def _train(folder: str, criterion: str, granularity: dict[str, Any] | None) -> None:
    model = sharded_tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe(criterion, granularity), total_steps=STEPS)
    assert isinstance(pruner.masks, ShardedMaskSet)
    train_steps(model, optimizer, range(STEPS))
    masks = {name: full(mask) for name, mask in pruner.masks.state_dict().items()}
    weights = {name: full(param.detach()) for name, param in pruner.params.items()}
    leaked = [name for name in masks if bool((weights[name][~masks[name]] != 0).any())]
    local_shapes = {name: list(mask.shape) for name, mask in pruner.masks.masks.items()}
    write_result(folder, {
        "sparsity": pruner.masks.sparsity(), "leaked": leaked, "masks": full_digests(masks), "local_shapes": local_shapes,
        "kept": {name: int(mask.sum()) for name, mask in masks.items()}, "summary": pruner.summary().sparsity,
        "dense_masks": {name: mask.flatten().tolist() for name, mask in masks.items()} if dist.get_rank() == 0 else None,
    })


def dense_masks(criterion: str, granularity: dict[str, Any] | None) -> dict[str, list[bool]]:
    """The same run in one process with the whole batch: the reference the sharded run must match."""
    from tests.fsdp_helpers import batch

    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    pruner = pa.Pruner(model, optimizer, recipe(criterion, granularity), total_steps=STEPS, sync=None)
    for step in range(STEPS):
        x, y = batch(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: mask.flatten().tolist() for name, mask in pruner.masks.state_dict().items()}


@pytest.mark.parametrize(
    ("criterion", "granularity"),
    [("magnitude", None), pytest.param("movement", None, marks=pytest.mark.slow), pytest.param("magnitude", {"type": "nm", "n": 2, "m": 4}, marks=pytest.mark.slow)],
)
def test_fsdp2_trains_with_masks_on_shards(tmp_path: Path, criterion: str, granularity: dict[str, Any] | None) -> None:
    run_ranks(_train, str(tmp_path), criterion, granularity)
    ranks = rank_results(tmp_path)
    target = 0.8 if granularity is None else 0.5
    for result in ranks:
        assert result["leaked"] == []
        assert result["sparsity"] == pytest.approx(target, abs=0.01)
        assert result["summary"] == pytest.approx(result["sparsity"])  # counted from the sharded weights themselves
        assert result["masks"] == ranks[0]["masks"]  # every rank assembles the same masks
    assert ranks[0]["local_shapes"]["blocks.0.up.weight"] == [9, 16]  # a shard's mask, not the whole weight's
    reference = dense_masks(criterion, granularity)
    agree = sum(a == b for name in reference for a, b in zip(reference[name], ranks[0]["dense_masks"][name]))
    total = sum(len(mask) for mask in reference.values())
    assert agree / total >= 0.99, f"sharded and unsharded masks agree on {agree}/{total} weights"


# -- refusals ----------------------------------------------------------------------------------------------


REFUSED = {
    "blocks": lambda: recipe(granularity={"type": "block", "shape": [2, 2]}),
    "snip": lambda: pa.methods.snip(0.5),
    "rigl": lambda: pa.methods.rigl(0.5),
    "splice": lambda: pa.methods.dynamic_surgery(0.5),
    "l1": lambda: pa.methods.l1_sparsity(),
    "channels": lambda: "structured",
}


def partly_sharded() -> Tiny:
    torch.manual_seed(0)
    model = Tiny()
    for block in model.blocks:
        fully_shard(block)  # the root (stem and head) left unsharded
    return model


MODELS = {"partly sharded": partly_sharded}


def _refusals(folder: str) -> None:
    messages = {}
    cases = [(case, sharded_tiny, build) for case, build in REFUSED.items()] + [(case, build, recipe) for case, build in MODELS.items()]
    for case, build_model, build_recipe in cases:
        model = build_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        try:
            pa.Pruner(model, optimizer, build_recipe(), total_steps=STEPS, example_inputs=torch.randn(2, 8))
            messages[case] = "accepted"
        except PruneawareError as error:
            messages[case] = str(error)
    write_result(folder, messages)


WORDS = {
    "blocks": ["block", "N:M"], "snip": ["snip", "unsharded"], "rigl": ["regrow", "DDP"], "splice": ["splice", "DDP"],
    "l1": ["regularizer", "DDP"], "channels": ["channels", "fully_shard the smaller model"],
    "partly sharded": ["not sharded", "at the root"],
}


def test_features_that_cannot_run_on_shards_are_refused_by_name(tmp_path: Path) -> None:
    run_ranks(_refusals, str(tmp_path))
    for messages in rank_results(tmp_path):
        for case, words in WORDS.items():
            assert all(word in messages[case] for word in words), (case, messages[case])


def test_fsdp1_is_refused_naming_fully_shard() -> None:
    """FSDP1 cannot be built on CPU (it needs an accelerator), so an FSDP1 module is made without its constructor."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = Tiny()
    shell = FullyShardedDataParallel.__new__(FullyShardedDataParallel)
    torch.nn.Module.__init__(shell)
    model.stem = shell
    with pytest.raises(ConfigError, match=r"FSDP1.*fully_shard \(FSDP2\)"):
        is_sharded(dict(model.named_parameters()), model)
