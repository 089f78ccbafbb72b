"""Pruning-aware training in your own loop under DistributedDataParallel, launched with torchrun.

    torchrun --nproc_per_node 2 examples/ddp_train.py                          # channels removed during training
    torchrun --nproc_per_node 2 examples/ddp_train.py --recipe default         # unstructured: GMP to 90%
    torchrun --nproc_per_node 2 examples/ddp_train.py --checkpoint ckpt.pt --stop-after 4   # as if killed after epoch 4
    torchrun --nproc_per_node 1 examples/ddp_train.py --checkpoint ckpt.pt --resume        # at any number of processes
    python examples/ddp_train.py                                                # one process, no torchrun

An MLP learns scikit-learn's digits (no download). Every rank takes its share of each global batch
of ``--batch-size`` samples, so the number of steps, and with it every schedule, does not depend on
how many processes run. ``--sync off`` turns off the broadcast of rank 0's masks (to measure its
cost; with ``--recipe default``, whose magnitude scores agree on every rank, it is safe to),
``--sync verify`` checks at each pruning step that weights and masks are bit-identical on every rank.
``--timeout`` (default: ``$PRUNEAWARE_DDP_TIMEOUT`` or 600 s) bounds every wait for another process:
a stopped or hung peer fails the run with a clear message after that long, not gloo's 30 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

import pruneaware as pa
from pruneaware.data import load_dataset
from pruneaware.distributed import RankZeroSync, World, save_on_main
from pruneaware.distributed.timeouts import peers_answer_within, resolve_timeout
from pruneaware.core.errors import PruneawareError
from pruneaware.recipe.shipped import default_recipe_path
from pruneaware.models import build_model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="structured", help="a recipe YAML file or a shipped recipe's name (default: structured)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, shared out across the processes")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--sync", choices=["auto", "off", "verify"], default="auto", help="how ranks agree on masks (default: rank 0's, broadcast)")
    parser.add_argument("--checkpoint", type=Path, help="write a checkpoint here after every epoch (rank 0 writes)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint, at any number of processes")
    parser.add_argument("--stop-after", type=int, help="stop after this epoch, as if interrupted (to try --resume)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for another process before failing (default: $PRUNEAWARE_DDP_TIMEOUT or 600)")
    args = parser.parse_args()
    if args.resume and args.checkpoint is None:
        parser.error("--resume continues from --checkpoint PATH; pass the checkpoint too")
    try:
        args.timeout = resolve_timeout(args.timeout, "--timeout")
    except PruneawareError as error:
        parser.error(str(error))
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    timeout = args.timeout
    if "WORLD_SIZE" in os.environ:  # started by torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT
        dist.init_process_group("gloo", timeout=timeout)  # gloo's default is 30 minutes
    world = World.current()
    try:
        with peers_answer_within(timeout, world.rank):  # a peer's timeout becomes one clear line
            train(args, world)
    except PruneawareError as error:
        print(f"error (rank {world.rank}): {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(args: argparse.Namespace, world: World) -> None:

    data = load_dataset("digits", seed=0)
    inputs, targets = data.train.tensors
    torch.manual_seed(0)  # the same initial weights everywhere (DDP would broadcast rank 0's anyway)
    model = build_model("mlp", data.input_shape, data.num_classes)
    wrapped = DistributedDataParallel(model) if world.distributed else model
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = -(-len(targets) // args.batch_size)
    recipe = args.recipe if args.recipe.endswith((".yaml", ".yml")) else default_recipe_path(args.recipe)
    sync = {"auto": "auto", "off": None, "verify": RankZeroSync(verify=True) if world.distributed else None}[args.sync]
    pruner = pa.Pruner(wrapped, optimizer, recipe, steps_per_epoch=steps_per_epoch, epochs=args.epochs,
                       example_inputs=inputs[: args.batch_size], sync=sync)

    first_epoch = 0
    if args.resume:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        pruner.load_state_dict(state["pruner"])  # first: it repeats channel removals, so the shapes below fit
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch = int(state["epoch"])

    started, steps = time.perf_counter(), 0
    for epoch in range(first_epoch, min(args.epochs, args.stop_after or args.epochs)):
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(epoch))  # the same on every rank
        for batch in order.split(args.batch_size):
            shard = world.shard(batch)
            summed = F.cross_entropy(pruner.model(inputs[shard]), targets[shard], reduction="sum")  # pruner.model: rebuilt after removals
            loss = world.mean_loss_share(summed, len(batch)) + pruner.penalty()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # masks, schedule and channel removal advance here
            steps += 1
        if args.checkpoint:
            state = {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "pruner": pruner.state_dict()}
            save_on_main(state, args.checkpoint)  # rank 0 writes, the others wait until the file is complete
    seconds = time.perf_counter() - started

    pruner.finalize()
    if world.is_main:
        model.eval()
        with torch.no_grad():
            accuracy = (model(data.test.tensors[0]).argmax(1) == data.test.tensors[1]).float().mean().item()
        print(pruner.summary())
        print(f"processes {world.size}  sync {args.sync}  test accuracy {accuracy:.2%}  parameters {sum(p.numel() for p in model.parameters()):,}")
        print(f"{steps} steps in {seconds:.2f} s: {steps / seconds:.1f} steps/s")


if __name__ == "__main__":
    main()
