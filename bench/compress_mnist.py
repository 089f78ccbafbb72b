"""ResNet-20 on real MNIST: blocks removed during fine-tuning, with and without distillation from the dense model.

Per seed: train a dense ResNet-20 for ``--pretrain-steps`` (SGD, cosine decay to 0: the teacher
converges); from that checkpoint fine-tune for ``--finetune-steps`` three ways, side by side: dense
(no removal), depth (``--remove`` blocks removed by block influence at 0%, 20% and 40% of
fine-tuning, task loss only), and depth + distillation (the same removal, plus logit KL to the
frozen dense model). Prints a JSON line per run (steps run, seconds, teacher seconds, blocks
removed) and a summary (mean and standard deviation of test accuracy over seeds).

    nice -n 10 flock /tmp/pa-heavy.lock .venv/bin/python bench/compress_mnist.py --seeds 0 1 2 > /tmp/compress_mnist.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import pruneaware as pa
from pruneaware.data.mnist import load_mnist
from pruneaware.models.resnet20 import ResNet20


def batches(dataset, batch: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(dataset, batch_size=batch, shuffle=True, generator=generator, drop_last=True)


def accuracy(model, dataset) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=1000):
            correct += int((model(x).argmax(1) == y).sum())
    model.train()
    return correct / len(dataset)


def train(model, data, steps: int, lr: float, recipe=None, example=None) -> dict:
    """SGD (momentum 0.9) with the learning rate decaying to 0 on a cosine; a recipe adds a Pruner."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=steps, example_inputs=example) if recipe else None
    start = time.perf_counter()
    done = 0
    for _, (x, y) in zip(range(steps), data):
        loss = F.cross_entropy(model(x), y) + (pruner.penalty() if pruner else 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        done += 1
    seconds = time.perf_counter() - start
    teacher = 0.0
    if pruner is not None:
        teacher = pruner.stage("distill").teacher_seconds if any(s.name == "distill" for s in pruner.stages) else 0.0
        pruner.finalize()
    removed = [name for name, module in model.named_modules() if type(module).__name__ == "SkippedBlock"]
    return {"steps": done, "seconds": seconds, "teacher_seconds": teacher, "removed": removed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-steps", type=int, default=1200)
    parser.add_argument("--pretrain-lr", type=float, default=0.05)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--remove", type=int, default=3)
    parser.add_argument("--kl", type=float, default=1.0, help="weight of the logit KL term (T^2 KL) beside the task loss")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--test-size", type=int, default=10000, help="the first N test images (all 10k by default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_mnist()
    test = torch.utils.data.Subset(splits.test, range(args.test_size))
    depth = {"type": "depth", "remove": args.remove, "at": [0.0, 0.2, 0.4]}
    distill = {"type": "distill", "kl": args.kl, "temperature": args.temperature}
    variants = {
        "dense": None,
        "depth": {"scope": {"include": ["*"]}, "stages": [depth]},
        "depth+distill": {"scope": {"include": ["*"]}, "stages": [distill, depth]},
    }
    results: dict[str, list[float]] = {name: [] for name in ("pretrained", *variants)}
    for seed in args.seeds:
        torch.manual_seed(seed)
        dense = ResNet20((1, 28, 28), 10)
        timing = train(dense, batches(splits.train, args.batch, seed), args.pretrain_steps, lr=args.pretrain_lr)
        results["pretrained"].append(accuracy(dense, test))
        print(json.dumps({"seed": seed, "variant": "pretrained", "accuracy": results["pretrained"][-1], **timing}), flush=True)
        example = splits.train[:8][0]
        for name, recipe in variants.items():
            model = copy.deepcopy(dense)
            torch.manual_seed(seed)
            timing = train(model, batches(splits.train, args.batch, seed + 100), args.finetune_steps, lr=args.finetune_lr, recipe=recipe, example=example)
            acc = accuracy(model, test)
            results[name].append(acc)
            params = sum(p.numel() for p in model.parameters())
            print(json.dumps({"seed": seed, "variant": name, "accuracy": acc, "params": params, **timing}), flush=True)
    summary = {
        name: {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "per_seed": accs}
        for name, accs in results.items()
    }
    print(json.dumps({"summary": summary, "args": vars(args)}), flush=True)


if __name__ == "__main__":
    main()
