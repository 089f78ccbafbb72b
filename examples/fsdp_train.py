"""Pruning-aware training of a small transformer sharded by FSDP2, with sharded checkpoints; start it with torchrun.

    torchrun --nproc_per_node 2 examples/fsdp_train.py                          # gloo on CPU
    torchrun --nproc_per_node 2 examples/fsdp_train.py --checkpoint ckpt --stop-after 10
    torchrun --nproc_per_node 4 examples/fsdp_train.py --checkpoint ckpt --resume   # resumes on 4 ranks
    torchrun --nproc_per_node 1 examples/fsdp_train.py --backend nccl                # one rank per GPU
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

import pruneaware as pa
from pruneaware.distributed.fsdp_checkpoint import load_sharded, save_sharded

STEPS, WIDTH = 40, 64


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(WIDTH, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Model(nn.Module):
    """Stem, four transformer blocks (each its own FSDP2 unit), head; outputs (tokens, features), never a view."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = nn.Linear(16, WIDTH), nn.ModuleList(Block() for _ in range(4)), nn.Linear(WIDTH, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h.flatten(0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="folder of the sharded checkpoint (written at the end, or at --stop-after)")
    parser.add_argument("--stop-after", type=int, default=STEPS)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo", help="nccl: one CUDA device per rank")
    args = parser.parse_args()
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(0)  # the same initial model on every rank before sharding
    model = Model().to(device)
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = pa.Pruner(model, optimizer, pa.methods.gradual_magnitude(final=0.8), total_steps=STEPS)
    start, loss = 0, torch.tensor(float("nan"))
    if args.resume:
        load_sharded(args.checkpoint, model, optimizer, pruner)
        start = pruner.step_count
    for step in range(start, min(args.stop_after, STEPS)):
        generator = torch.Generator().manual_seed(step)  # the global batch of this step; each rank takes its share
        x = torch.randn(8, 12, 16, generator=generator).to(device)
        loss = nn.functional.mse_loss(model(x[rank::world]), x[rank::world].flip(1).flatten(0, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # masks are enforced on each rank's shards in here
    sparsity = pruner.summary().sparsity  # counted from the sharded weights: every rank calls it
    if rank == 0:
        print(f"step {pruner.step_count}: loss {loss.item():.4f}, sparsity {sparsity:.3f} on {world} ranks")
    if args.checkpoint:
        save_sharded(args.checkpoint, model, optimizer, pruner)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
