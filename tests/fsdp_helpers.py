"""A small transformer-like model sharded by fully_shard per block and at the root, and the ranks' shared plumbing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from pruneaware.distributed import digests, launch

WIDTH, HIDDEN = 16, 18  # 18 rows shard unevenly over 4 ranks (5, 5, 5, 3)
GMP = {
    "name": "gmp",
    "pruning": {"criterion": "magnitude", "granularity": {"type": "element", "scope": "global"},
                "schedule": {"type": "cubic", "final": 0.8, "begin": 0.0, "end": 0.75, "every": 0.125}},
}
"""Gradual magnitude pruning to 80% over the first three quarters of a run: the trainer-callback tests' recipe."""


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(WIDTH, HIDDEN)
        self.down = nn.Linear(HIDDEN, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)))


class Tiny(nn.Module):
    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Linear(8, WIDTH)
        self.blocks = nn.ModuleList([Block() for _ in range(blocks)])
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def sharded_tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny()
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def batch(step: int, rank: int | None = None, world: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Global batch ``step`` (8 samples), or this rank's share of it."""
    generator = torch.Generator().manual_seed(1000 + step)
    x, y = torch.randn(8, 8, generator=generator), torch.randn(8, 3, generator=generator)
    if rank is None:
        return x, y
    return x[rank::world], y[rank::world]


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    for step in steps:
        x, y = batch(step, rank, world)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_digests(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    return digests({name: full(tensor) for name, tensor in tensors.items()})


def run_ranks(fn: Any, *args: Any, nproc: int = 2) -> None:
    launch(fn, nproc, args, start_method="fork", threads=1, timeout=timedelta(seconds=120))


def write_result(folder: str, result: dict[str, Any]) -> None:
    Path(folder, f"rank{dist.get_rank()}.json").write_text(json.dumps(result))


def rank_results(folder: Path, nproc: int = 2) -> list[dict[str, Any]]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(nproc)]
