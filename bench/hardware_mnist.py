"""Pruning-aware training to half the dense latency, ResNet-20 on real MNIST or a 1-D CNN on MNIST-1D: MACs target vs
latency target with latency allocation vs the same plus the latency penalty; accuracy over seeds, measured latency, MACs.

Each variant trains from scratch for ``--epochs`` on the first ``--train-size`` training samples, removing channels
during training (cubic schedule) until its target is met; latency is measured side by side (interleaved rounds) at
batch 1 and 64 against the dense model of the same seed.

    python bench/hardware_mnist.py [--dataset mnist|mnist1d] [--seeds 0 1 2] [--epochs 1] [--train-size 6000] [--threads 1]
        [--latency-batch 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

import pruneaware as pa
from pruneaware.core.errors import ConfigError
from pruneaware.data.mnist import load_mnist
from pruneaware.data.mnist1d import load_mnist1d
from pruneaware.hardware.keys import cpu_name
from pruneaware.job.trainer import evaluate
from pruneaware.measure import compare_latency
from pruneaware.models.cnn1d import CNN1d
from pruneaware.models.resnet20 import ResNet20
from pruneaware.structured.target import forward_macs

SCHEDULE = {"type": "cubic", "final": 0.7, "begin": 0.1, "end": 0.6, "every": 0.1}
def variants(latency_batch: int) -> dict[str, tuple[dict, list | None]]:
    """The three recipes: (a) MACs target, (b) latency target at ``latency_batch`` with latency allocation, (c) (b) plus
    the latency penalty."""
    target = {"target": {"latency": 0.5, "threads": 1, "batch": latency_batch}}
    allocation = {"type": "latency_allocation", "threads": 1, "batch": latency_batch}
    return {
        "(a) MACs 0.5": ({"target": {"macs": 0.5}}, None),
        "(b) latency 0.5 + allocation": (target, ["channels", allocation]),
        "(c) (b) + latency penalty": (target, ["channels", allocation, {"type": "latency_penalty", "strength": 1e-4, "threads": 1, "batch": latency_batch}]),
    }


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy on the loader's data set, through the job's own evaluation."""
    return evaluate(model, loader.dataset)[1]


def train(seed: int, variant: str | None, args: argparse.Namespace, splits) -> tuple[nn.Module, float, float]:
    torch.manual_seed(seed)
    if args.dataset == "mnist":
        model: nn.Module = ResNet20(splits.input_shape, splits.num_classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        model = CNN1d(splits.input_shape, splits.num_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(splits.train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(seed))
    pruner = None
    started = time.perf_counter()
    if variant is not None:
        section, stages = variants(args.latency_batch)[variant]
        recipe = pa.Recipe.from_dict({"structured": {"schedule": SCHEDULE, "max_layer_ratio": 0.8, **section}, **({"stages": stages} if stages else {})})
        calibration = [next(iter(DataLoader(splits.train, batch_size=64)))]
        pruner = pa.Pruner(model, optimizer, recipe, total_steps=args.epochs * len(loader), example_inputs=calibration[0][0][:1],
                           calibration_data=calibration, loss_fn=nn.functional.cross_entropy)
    for _ in range(args.epochs):
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y) + (pruner.penalty() if pruner is not None else 0.0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    seconds = time.perf_counter() - started
    return model.eval(), accuracy(model, DataLoader(splits.test, batch_size=1000)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist", "mnist1d"], default="mnist", help="mnist: ResNet-20; mnist1d: the 1-D CNN")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-batch", type=int, default=1, help="the batch size the latency target of (b) and (c) is measured at")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.dataset == "mnist":
        splits, title = load_mnist(train_size=args.train_size), "ResNet-20 on MNIST"
    else:
        splits, title = load_mnist1d(), "1-D CNN on MNIST-1D"  # its canonical 4000/1000 split; --train-size is for MNIST
    example = splits.test.tensors[0][:1]
    print(f"torch {torch.__version__}, {cpu_name()}, {args.threads} threads, {title} ({len(splits.train)} train samples, "
          f"{args.epochs} epoch(s)), latency target at batch {args.latency_batch}, seeds {args.seeds}, load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in ["dense", *variants(args.latency_batch)]}
    for seed in args.seeds:
        dense, dense_acc, dense_s = train(seed, None, args, splits)
        models = {"dense": dense}
        results = {"dense": (dense_acc, dense_s)}
        for variant in variants(args.latency_batch):
            try:
                models[variant], acc, seconds = train(seed, variant, args, splits)
            except ConfigError as error:  # e.g. a latency budget no removal reaches: the library says what is reachable
                print(f"seed {seed} {variant}: refused: {error}", flush=True)
                continue
            results[variant] = (acc, seconds)
        latency = {batch: compare_latency(models, splits.test.tensors[0][:batch], warmup=3, repeats=20, threads=args.threads) for batch in (1, 64)}
        for name, model in models.items():
            acc, seconds = results[name]
            rows[name].append((acc, latency[1][name].median_ms, latency[1][name].median_ms / latency[1]["dense"].median_ms,
                               latency[64][name].median_ms, latency[64][name].median_ms / latency[64]["dense"].median_ms,
                               forward_macs(model, example), forward_macs(model, example) / forward_macs(dense, example), seconds))
            print(f"seed {seed} {name}: accuracy {acc:.4f}, latency b1 {latency[1][name].median_ms:.2f} ms, b64 {latency[64][name].median_ms:.1f} ms, "
                  f"MACs {forward_macs(model, example):,}, train {seconds:.0f} s", flush=True)
    print("\n| variant | accuracy % (mean ± std) | latency b1 ms (/ dense) | latency b64 ms (/ dense) | MACs (/ dense) | train s |")
    print("|---|---|---|---|---|---|")
    for name, values in rows.items():
        if not values:
            print(f"| {name} | refused (above) | | | | |")
            continue
        acc, b1, b1_ratio, b64, b64_ratio, macs, macs_ratio, seconds = (statistics.mean(c) for c in zip(*values))
        spread = statistics.stdev(v[0] for v in values) if len(values) > 1 else 0.0
        print(f"| {name} | {100 * acc:.2f} ± {100 * spread:.2f} | {b1:.3f} ({b1_ratio:.2f}) | {b64:.2f} ({b64_ratio:.2f}) | "
              f"{macs / 1e6:.3g} M ({macs_ratio:.2f}) | {seconds:.0f} |")
    print(f"<!-- load average at end {os.getloadavg()[0]:.1f} -->")


if __name__ == "__main__":
    main()
