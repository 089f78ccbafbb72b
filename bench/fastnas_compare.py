"""NVIDIA modelopt's FastNAS beside pruneaware: same model, data, MACs target and fine-tune budget, over seeds.

Per seed, one dense torchvision ResNet-18 (10 classes, MNIST padded to 32x32) is trained, then copied twice:
FastNAS searches a subnet at the MACs target (``mtp.prune``, scored on held-out training images) and is fine-tuned;
pruneaware removes channels during the same fine-tune (latency allocation from measured sensitivity, widths the
latency table shows fast, optionally distillation from the dense model). Every fine-tune of a seed draws the same
batches in the same order (the shuffle restarts from where the dense training left it). Reported: test accuracy, params, MACs,
latency at batch 1 and 8 (all models of a seed side by side: interleaved rounds, median), pruning wall time.

    python bench/fastnas_compare.py [--seeds 0 1 2] [--train-size 10000] [--pretrain-epochs 2] [--finetune-epochs 2]
                                    [--macs 0.5] [--threads 1] [--save DIR]
    python bench/fastnas_compare.py --measure-saved DIR [--threads 1]   # latency only, of models saved by --save
    python bench/fastnas_compare.py --combine a.json b.json ...         # one table from runs saved with --json

modelopt is optional: ``pip install --no-deps -r requirements/bench.txt``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fastnas_helpers import build_resnet18, conv_widths, load_slim, mean_std, overhead_seconds, save_slim  # noqa: E402

import pruneaware as pa  # noqa: E402
from pruneaware.criteria.channel import CHANNEL_CRITERIA  # noqa: E402
from pruneaware.data.mnist import load_mnist  # noqa: E402
from pruneaware.hardware.keys import cpu_name  # noqa: E402
from pruneaware.job.trainer import evaluate  # noqa: E402
from pruneaware.measure import compare_latency  # noqa: E402
from pruneaware.structured.target import forward_macs  # noqa: E402

BATCHES = (1, 8)


def import_modelopt():
    """``modelopt.torch.prune``, or exit naming the install command."""
    try:
        import modelopt.torch.opt as mto
        import modelopt.torch.prune as mtp
    except ImportError as error:
        sys.exit(f"this bench needs NVIDIA modelopt ({error}); install it with: pip install --no-deps -r requirements/bench.txt")
    return mtp, mto


def padded(images: torch.Tensor) -> torch.Tensor:
    """28x28 MNIST to the 32x32 inputs of the comparison."""
    return nn.functional.pad(images, (2, 2, 2, 2))


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy on the loader's data set, through the job's own evaluation."""
    return evaluate(model, loader.dataset)[1]


def train(model: nn.Module, loader: DataLoader, epochs: int, lr: float, pruner_factory=None) -> tuple[nn.Module, float, float]:
    """SGD with cosine decay; returns the model, wall seconds, and seconds spent pruning inside the steps and Pruner."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + torch.cos(torch.tensor(step / steps * torch.pi)).item()))
    started = time.perf_counter()
    pruner, setup_s = None, 0.0
    if pruner_factory is not None:
        pruner = pruner_factory(model, optimizer, steps)
        setup_s = time.perf_counter() - started
    step_times: list[float] = []
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            if pruner is not None:
                loss = loss + pruner.penalty()
            loss.backward()
            tick = time.perf_counter()
            optimizer.step()
            step_times.append(time.perf_counter() - tick)
            optimizer.zero_grad()
            scheduler.step()
    if pruner is not None:
        model = pruner.finalize()
    return model.eval(), time.perf_counter() - started, setup_s + overhead_seconds(step_times)


def pruneaware_factory(args: argparse.Namespace, calibration: list[tuple[torch.Tensor, torch.Tensor]], latency: float, distill: bool):
    """A Pruner that removes channels early in the fine-tune, widths from latency allocation (``latency``: its extra budget),
    with ``distill`` also distilling from the dense model."""
    rounding = {} if args.round_to == "auto" else {"round_to": args.round_to}  # auto: the library's default
    allocation = {"type": "latency_allocation", "threads": args.threads, "batches": len(calibration), **rounding}
    stages: list = ["channels", {**allocation, **({"latency": latency} if latency else {})}]
    if distill:
        stages.append({"type": "distill", "kl": 1.0, "temperature": 2.0})
    schedule = ({"type": "one_shot", "sparsity": 0.9, "at": 0} if args.prune_until == 0  # FastNAS's procedure: cut, then fine-tune
                else {"type": "cubic", "final": 0.9, "begin": 0.0, "end": args.prune_until, "every": args.prune_every})
    recipe = pa.Recipe.from_dict({
        "structured": {"schedule": schedule,
                       "target": {"macs": args.macs}, "max_layer_ratio": 0.9, **rounding,
                       **({"importance": args.importance} if args.importance else {})},
        "stages": stages,
    })

    def factory(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> pa.Pruner:
        return pa.Pruner(model, optimizer, recipe, total_steps=steps, example_inputs=calibration[0][0][:1],
                         calibration_data=calibration, loss_fn=nn.functional.cross_entropy)

    return factory


def fastnas(model: nn.Module, args: argparse.Namespace, score_loader: DataLoader, calib_loader: DataLoader, example: torch.Tensor) -> tuple[nn.Module, float]:
    """FastNAS's subnet at the MACs target (its ``flops`` constraint counts MACs), and the seconds ``mtp.prune`` took."""
    mtp, _ = import_modelopt()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        model, _ = mtp.prune(model, mode="fastnas", constraints={"flops": f"{round(100 * args.macs)}%"}, dummy_input=example,
                             config={"data_loader": calib_loader, "collect_func": lambda batch: batch[0],
                                     "score_func": lambda m: accuracy(m, score_loader), "checkpoint": f"{folder}/search.pth"})
    return model, time.perf_counter() - started


def cut_to_widths(model: nn.Module, shaped: nn.Module, example: torch.Tensor, criterion: str) -> nn.Module:
    """``model`` with every convolution cut to its width in ``shaped``, each group dropping its least important channels
    by pruneaware's ``criterion`` (coupled layers go with them through Torch-Pruning's dependency graph)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    widths = {name: m.out_channels for name, m in shaped.named_modules() if isinstance(m, nn.Conv2d)}
    importance = CHANNEL_CRITERIA.build(criterion)
    for name, conv in list(model.named_modules()):
        cut = conv.out_channels - widths[name] if isinstance(conv, nn.Conv2d) else 0
        if cut > 0:  # a coupled layer cut earlier is already at its width
            whole = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
            least = torch.argsort(importance(whole))[:cut].tolist()
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=least).prune()
    return model


def measure(models: dict[str, nn.Module], example: torch.Tensor, threads: int) -> dict[int, dict[str, float]]:
    """Median ms per model at each batch size, all models interleaved."""
    return {b: {name: r.median_ms for name, r in compare_latency(models, example[:1].expand(b, *example.shape[1:]).contiguous(),
                                                               warmup=5, repeats=40, rounds=8, threads=threads).items()} for b in BATCHES}


def run_seed(seed: int, args: argparse.Namespace, data) -> dict[str, dict[str, float]]:
    train_set, score_set, test_loader = data
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=128, shuffle=True, generator=order)
    example = score_set.tensors[0][:1]
    dense, dense_s, _ = train(build_resnet18(), loader, args.pretrain_epochs, args.lr)
    shuffled = order.get_state()  # every fine-tune sees the same batches in the same order: a paired comparison
    rows = {"dense": {"accuracy": accuracy(dense, test_loader), "prune_s": 0.0, "train_s": dense_s}}
    models = {"dense": dense}
    score_loader = DataLoader(score_set, batch_size=500)
    calib_loader = DataLoader(score_set, batch_size=128)
    calibration = [tuple(t[i:i + 256] for t in score_set.tensors) for i in range(0, args.calibration_images, 256)]
    if not args.skip_fastnas:
        torch.manual_seed(seed)
        order.set_state(shuffled)
        slim, prune_s = fastnas(copy.deepcopy(dense), args, score_loader, calib_loader, example)
        slim, tune_s, _ = train(slim, loader, args.finetune_epochs, args.finetune_lr)
        models["FastNAS"] = slim
        rows["FastNAS"] = {"accuracy": accuracy(slim, test_loader), "prune_s": prune_s, "train_s": tune_s}
        if args.fastnas_widths:  # FastNAS's widths, pruneaware's channels: which of the two makes the accuracy?
            torch.manual_seed(seed)
            order.set_state(shuffled)
            started = time.perf_counter()
            cut = cut_to_widths(copy.deepcopy(dense), slim, example, args.importance or "l2")
            cut_s = time.perf_counter() - started
            cut, tune_s, _ = train(cut, loader, args.finetune_epochs, args.finetune_lr)
            name = f"{args.importance or 'l2'} channels at FastNAS widths"
            models[name] = cut
            rows[name] = {"accuracy": accuracy(cut, test_loader), "prune_s": cut_s, "train_s": tune_s}
    variants = [(latency, distill) for latency in args.latency for distill in {"off": [False], "on": [True], "both": [False, True]}[args.distill]]
    for latency, distill in variants:
        name = ("pruneaware" if len(args.latency) == 1 else f"pruneaware-L{latency:g}") + ("-distill" if distill else "")
        torch.manual_seed(seed)
        order.set_state(shuffled)
        with tempfile.TemporaryDirectory() as cache:  # a fresh latency table per variant: its build counts as pruning time
            if args.fresh_table:
                os.environ["PRUNEAWARE_CACHE"] = cache
            factory = pruneaware_factory(args, calibration, latency, distill)
            slim, tune_s, prune_s = train(copy.deepcopy(dense), loader, args.finetune_epochs, args.finetune_lr, factory)
        models[name] = slim
        rows[name] = {"accuracy": accuracy(slim, test_loader), "prune_s": prune_s, "train_s": tune_s}
    latency = measure(models, example, args.threads)
    for name, model in models.items():
        rows[name].update(params=sum(p.numel() for p in model.parameters()), macs=forward_macs(model, example),
                          **{f"b{b}_ms": latency[b][name] for b in BATCHES})
        if args.save:
            save_slim(model, Path(args.save) / f"seed{seed}_{name}.pt")
        print(f"seed {seed} {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[name].items()) + f", widths {conv_widths(model)}", flush=True)
    return rows


def report(results: list[dict[str, dict[str, float]]]) -> None:
    dense = results[0]["dense"]
    print("\n| model | accuracy % | params (/ dense) | MACs (/ dense) | b1 latency / dense | b8 latency / dense | prune s | fine-tune s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in results[0]:
        runs = [r[name] for r in results]
        ratio = lambda key: mean_std([r[name][key] / r["dense"][key] for r in results])  # noqa: E731
        print(f"| {name} | {mean_std([100 * r['accuracy'] for r in runs])} | {statistics.mean(r['params'] for r in runs) / 1e6:.2f} M "
              f"({ratio('params')}) | {statistics.mean(r['macs'] for r in runs) / 1e6:.1f} M ({ratio('macs')}) | {ratio('b1_ms')} | "
              f"{ratio('b8_ms')} | {mean_std([r['prune_s'] for r in runs])} | {mean_std([r['train_s'] for r in runs])} |")
    print(f"dense latency (first seed): b1 {dense['b1_ms']:.2f} ms, b8 {dense['b8_ms']:.2f} ms")


def measure_saved(folder: Path, threads: int) -> None:
    """Latency of models saved by ``--save``, side by side per seed (no modelopt needed)."""
    files = sorted(folder.glob("seed*_*.pt"))
    if not files:
        sys.exit(f"no seed*_*.pt in {folder}: write them with --save {folder}")
    seeds = sorted({f.name.split("_")[0] for f in files})
    print(f"torch {torch.__version__}, {cpu_name()}, {threads} threads, load average {os.getloadavg()[0]:.1f}")
    ratios: dict[str, dict[int, list[float]]] = {}
    for seed in seeds:
        found = {f.stem.split("_", 1)[1]: f for f in files if f.name.startswith(seed + "_")}
        if "dense" not in found:
            sys.exit(f"{folder}: {seed} has no dense model to measure against")
        models = {name: load_slim(found[name], build_resnet18()) for name in sorted(found, key=lambda n: n != "dense")}
        latency = measure(models, torch.zeros(1, 1, 32, 32), threads)
        for name in models:
            print(f"{seed} {name}: " + ", ".join(f"b{b} {latency[b][name]:.3f} ms" for b in BATCHES))
            for b in BATCHES:
                ratios.setdefault(name, {}).setdefault(b, []).append(latency[b][name] / latency[b]["dense"])
    print("\n| model | " + " | ".join(f"b{b} latency / dense" for b in BATCHES) + " |\n|---|" + "---|" * len(BATCHES))
    for name, by_batch in ratios.items():
        print(f"| {name} | " + " | ".join(mean_std(values) for values in by_batch.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--macs", type=float, default=0.5, help="MACs target, a fraction of the dense model's")
    parser.add_argument("--latency", type=float, nargs="+", default=[0.5],
                        help="pruneaware's allocation also holds predicted batch-1 latency to this fraction of dense (0: MACs only); "
                             "several values: one pruneaware run each")
    parser.add_argument("--score-images", type=int, default=1000, help="held-out training images FastNAS scores subnets on")
    parser.add_argument("--calibration-images", type=int, default=512, help="of those, pruneaware's sensitivity batches (256 each)")
    parser.add_argument("--round-to", type=lambda v: v if v == "auto" else int(v), default="auto",
                        help="pruneaware's width multiple: auto (the library's default, a step per layer from its width) or an integer "
                             "(FastNAS's channel divisor is 32)")
    parser.add_argument("--prune-until", type=float, default=0.3,
                        help="fraction of the fine-tune by which pruneaware's removal ends (0: all of it at step 0, as FastNAS does)")
    parser.add_argument("--prune-every", type=float, default=0.1)
    parser.add_argument("--distill", choices=("off", "on", "both"), default="off",
                        help="pruneaware distills from the dense model while fine-tuning (FastNAS gets no teacher); both: a run each")
    parser.add_argument("--fresh-table", action=argparse.BooleanOptionalAction, default=True,
                        help="build pruneaware's latency table afresh per seed (its build counts as pruning time)")
    parser.add_argument("--importance", help="pruneaware's channel criterion (structured.importance; default: the library's, l2)")
    parser.add_argument("--fastnas-widths", action="store_true",
                        help="also cut the dense model to FastNAS's widths by pruneaware's --importance and fine-tune it alike")
    parser.add_argument("--skip-fastnas", action="store_true", help="pruneaware alone (no modelopt needed)")
    parser.add_argument("--threads", type=int, default=1, help="threads for latency: tables, allocation and measurement")
    parser.add_argument("--train-threads", type=int, help="threads for training, FastNAS's search and sensitivity (default: --threads)")
    parser.add_argument("--json", type=Path, help="also write the per-seed rows here")
    parser.add_argument("--combine", type=Path, nargs="+", help="only print the table of rows written with --json")
    parser.add_argument("--save", help="folder to save every model in, for --measure-saved elsewhere")
    parser.add_argument("--measure-saved", type=Path, help="only measure the latency of models saved with --save")
    args = parser.parse_args()
    torch.set_num_threads(args.train_threads or args.threads)
    if args.combine:
        return report([seed for path in args.combine for seed in json.loads(path.read_text())])
    if args.measure_saved:
        return measure_saved(args.measure_saved, args.threads)
    if not args.skip_fastnas:
        import_modelopt()
    splits = load_mnist(train_size=min(args.train_size + args.score_images, 50000))
    images, labels = padded(splits.train.tensors[0]), splits.train.tensors[1]
    train_set, score_set = TensorDataset(images[:args.train_size], labels[:args.train_size]), TensorDataset(images[args.train_size:], labels[args.train_size:])
    test_loader = DataLoader(TensorDataset(padded(splits.test.tensors[0]), splits.test.tensors[1]), batch_size=1000)
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {cpu_name()}, {args.threads} latency / {args.train_threads or args.threads} training threads, ResNet-18 (10 classes, 32x32 MNIST, {args.train_size} train "
          f"images), MACs target {args.macs}, pretrain {args.pretrain_epochs} + fine-tune {args.finetune_epochs} epochs, seeds {args.seeds}, "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for seed in args.seeds:
        results.append(run_seed(seed, args, (train_set, score_set, test_loader)))
        if args.json:  # after every seed, so a stopped run keeps what it measured
            args.json.write_text(json.dumps(results))
    report(results)
    print(f"<!-- load average at end {os.getloadavg()[0]:.1f} -->")


if __name__ == "__main__":
    main()
