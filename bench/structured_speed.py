"""Does removing channels buy real speed, and what does our tracking cost over Torch-Pruning alone?

For each model: a dense copy and a copy with ``--ratio`` of the channels of every prunable layer
removed by ``pruneaware`` (uniform allocation, L2 group magnitude). Prints, measured side by side
in one run:

- MACs of both, eval-mode CPU latency (interleaved rounds, median) at each batch size, and the
  *efficiency* = measured speedup / MACs ratio (1.0: latency falls exactly as MACs do);
- the time to build the dependency graph and remove the channels (``ChannelPruner``: graph,
  ranking, tracked surgery), and to build a whole ``pa.Pruner`` (adds the support check's forward
  pass and the scope), vs Torch-Pruning alone (``MetaPruner`` + ``step()``), same model, same ratio,
  rotating order, the first repeat of each dropped as warm-up.

With ``--fold-bn`` both models have BatchNorm folded into the convolutions before timing (torch backend); with
``--profile``, each model's self time per operator (``torch.profiler``) shows where eager's time goes.

    python bench/structured_speed.py [--models resnet50 vit_b_16] [--ratio 0.5] [--round-to 8] [--batch 1 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version

import torch
import torch_pruning as tp
import torchvision
from torch import nn

import pruneaware as pa
from pruneaware.hardware.keys import cpu_name
from pruneaware.measure import compare_latency, count_parameters
from pruneaware.structured import convert_for_pruning
from pruneaware.schedules import OneShot
from pruneaware.structured.attention import AttentionHeads
from pruneaware.structured.channels import ChannelPruner
from pruneaware.structured.target import forward_macs


def build(name: str, image: int) -> tuple[nn.Module, torch.Tensor]:
    """A torchvision model with random weights, attention made head-prunable (a no-op for CNNs)."""
    torch.manual_seed(0)
    size = {"image_size": image} if name.startswith("vit") else {}  # a ViT's position embeddings are built for one size
    model = convert_for_pruning(torchvision.models.get_model(name, weights=None, num_classes=1000, **size))
    with torch.no_grad():  # random but not degenerate: torchvision zero-initialises some heads
        for module in model.modules():
            if isinstance(module, nn.Linear) and module.weight.abs().sum() == 0:
                nn.init.normal_(module.weight, std=0.01)
    return model.eval(), torch.randn(1, 3, image, image)


def classifier_of(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


RESIDUAL = {  # modules writing the residual stream: left whole by --keep-residual (only inner widths are cut)
    "resnet": ["conv1", "layer*.*.conv3", "layer*.*.downsample.0"],
    "vit": ["conv_proj", "encoder.layers.*.self_attention.out_proj", "encoder.layers.*.mlp.3"],
}


def prune_with_pruneaware(
    model: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None, macs: float | None = None,
    allocation: str = "uniform", keep_residual: bool = False, latency: float | None = None, backend: str = "torch",
) -> pa.Pruner:
    """``ratio`` of every layer's channels, or (``macs``) the smallest removal meeting a MACs budget, which
    ``allocation`` spreads uniformly, by global ranking, or by measured sensitivity and the latency table (which, given
    ``latency``, also holds the predicted latency to that fraction of dense)."""
    schedule = {"type": "one_shot", "sparsity": ratio if macs is None else 0.9, "at": 0, "unit": "step"}
    ignore = [p for family, patterns in RESIDUAL.items() if keep_residual and family in type(model).__name__.lower() for p in patterns]
    structured = {"schedule": schedule, "allocation": "global" if allocation == "global" else "uniform", "max_layer_ratio": 0.95,
                  "round_to": round_to, "ignore": ignore, **({"target": {"macs": macs}} if macs is not None else {})}
    spec: dict = {"structured": structured}
    extra: dict = {}
    if allocation == "latency":  # sensitivity on random calibration data: a speed bench, the widths are what matters here
        stage = {"type": "latency_allocation", "threads": torch.get_num_threads(), "latency": latency, "backend": backend,
                 **({"round_to": round_to} if round_to else {})}  # without --round-to: the library's default (auto)
        spec["stages"] = ["channels", stage]
        extra = {"calibration_data": [(example, torch.zeros(1, dtype=torch.long))], "loss_fn": nn.functional.cross_entropy}
    return pa.Pruner(model, None, pa.Recipe.from_dict(spec), total_steps=1, example_inputs=example, **extra)


def prune_graph_and_channels(model: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None) -> None:
    """Graph build, ranking and tracked removal alone (``ChannelPruner``), as Torch-Pruning does them."""
    pruner = ChannelPruner(model, example, OneShot(ratio, 0), allocation="uniform", max_layer_ratio=0.95,
                           round_to=round_to, ignored=[classifier_of(model)])
    pruner.update(0)


def prune_with_torch_pruning(model: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None) -> None:
    """The same removal with Torch-Pruning alone: same importance, ratio, cap and head options; nothing tracked."""
    heads = AttentionHeads(model, [classifier_of(model)]).pruner_options()
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        max_pruning_ratio=0.95,
        round_to=round_to,
        ignored_layers=[classifier_of(model)],
        global_pruning=False,
        in_channel_groups={},
        out_channel_groups={},
        **heads,
    )
    pruner.step()


def time_pruning(base: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None, repeats: int) -> dict[str, list[float]]:
    """Seconds to trace and prune fresh copies, alternating the two tools."""
    tools: dict[str, Callable[[nn.Module], object]] = {
        "pa.Pruner": lambda m: prune_with_pruneaware(m, example, ratio, round_to),
        "graph + removal": lambda m: prune_graph_and_channels(m, example, ratio, round_to),
        "torch-pruning": lambda m: prune_with_torch_pruning(m, example, ratio, round_to),
    }
    seconds: dict[str, list[float]] = {name: [] for name in tools}
    for index in range(repeats):
        for name in list(tools)[index % 3 :] + list(tools)[: index % 3]:
            model = copy.deepcopy(base)
            start = time.perf_counter()
            tools[name](model)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """The model with each BatchNorm folded into the convolution before it (``torch.fx``), as deployment runtimes do."""
    from torch.fx.experimental.optimization import fuse

    return fuse(model)


def operator_split(models: dict[str, nn.Module], inputs: torch.Tensor, repeats: int, top: int = 8) -> None:
    """Milliseconds of self time per forward for each operator (``torch.profiler``), dense beside slim, largest first."""
    per_model: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        with torch.no_grad():
            for _ in range(3):
                model(inputs)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                for _ in range(repeats):
                    model(inputs)
        per_model[name] = {event.key: event.self_cpu_time_total / 1000 / repeats for event in profile.key_averages()}
    dense, slim = per_model["dense"], per_model["slim"]
    print(f"| operator (batch {inputs.shape[0]}) | dense ms | slim ms | speedup |")
    print("|---|---|---|---|")
    for op in sorted(dense, key=dense.get, reverse=True)[:top]:
        print(f"| {op} | {dense[op]:.2f} | {slim.get(op, 0.0):.2f} | {dense[op] / max(slim.get(op, 0.0), 1e-9):.2f}x |")
    print(f"| all operators | {sum(dense.values()):.2f} | {sum(slim.values()):.2f} | {sum(dense.values()) / sum(slim.values()):.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed per layer")
    parser.add_argument("--macs", type=float, default=None, help="instead of --ratio: prune to this fraction of dense MACs")
    parser.add_argument("--allocation", choices=["uniform", "global", "latency"], default="uniform",
                        help="with --macs: uniform ratios, global ranking, or latency_allocation (sensitivity + latency table)")
    parser.add_argument("--latency", type=float, default=None, help="with --allocation latency: also hold predicted batch-1 latency to this fraction of dense")
    parser.add_argument("--keep-residual", action="store_true", help="cut only inner widths (bottlenecks, heads, MLP), not the residual stream")
    parser.add_argument("--no-prune-timing", action="store_true", help="skip timing the pruning itself against Torch-Pruning")
    parser.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this")
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=20, help="timed forwards per model and batch size")
    parser.add_argument("--prune-repeats", type=int, default=4, help="timed prunes per tool")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convolutions of both models before timing (torch backend)")
    parser.add_argument("--profile", action="store_true", help="also print each model's self time per operator (torch backend)")
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                        help="where latency is measured, and the latency table latency allocation reads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    amount = f"MACs target {args.macs}, {args.allocation} allocation" if args.macs is not None else f"ratio {args.ratio}"
    print(f"torch {torch.__version__}, torch-pruning {version('torch-pruning')}, {cpu_name()}, {args.threads} threads, {amount}, "
          f"round_to {args.round_to}, fold BN {args.fold_bn}, latency budget {args.latency}, keep residual {args.keep_residual}, image {args.image}, backend {args.backend}, load average {os.getloadavg()[0]:.1f}")

    for name in args.models:
        dense, example = build(name, args.image)
        slim = copy.deepcopy(dense)
        started = time.perf_counter()
        prune_with_pruneaware(slim, example, args.ratio, args.round_to, args.macs, args.allocation, args.keep_residual, args.latency, args.backend)
        pruned_in = time.perf_counter() - started
        widths = sorted({m.out_channels for m in slim.modules() if isinstance(m, nn.Conv2d)} | {m.out_features for m in slim.modules() if isinstance(m, nn.Linear)})
        dense_macs, slim_macs = forward_macs(dense, example), forward_macs(slim, example)
        macs_ratio = dense_macs / slim_macs
        print(f"\n## {name}: params {count_parameters(dense):,} -> {count_parameters(slim):,}, "
              f"MACs {dense_macs / 1e9:.3f} G -> {slim_macs / 1e9:.3f} G (dense/slim {macs_ratio:.2f}x), pruned in {pruned_in:.0f} s, "
              f"output widths {widths}")
        timed = {"dense": dense, "slim": slim}
        if args.fold_bn:
            timed = {role: fold_batchnorm(model) for role, model in timed.items()}
        print("| batch | dense ms | slim ms | speedup | MACs ratio | efficiency |")
        print("|---|---|---|---|---|---|")
        for batch in args.batch:
            inputs = torch.randn(batch, *example.shape[1:])
            reports = compare_latency(timed, inputs, warmup=3, repeats=args.repeats, rounds=args.repeats, backend=args.backend)
            latency = {name: report.median_ms for name, report in reports.items()}
            speedup = latency["dense"] / latency["slim"]
            print(f"| {batch} | {latency['dense']:.1f} | {latency['slim']:.1f} | {speedup:.2f}x "
                  f"| {macs_ratio:.2f}x | {speedup / macs_ratio:.2f} |")
        if args.profile:
            for batch in args.batch:
                operator_split(timed, torch.randn(batch, *example.shape[1:]), args.repeats)
        if args.no_prune_timing or args.macs is not None:
            continue
        seconds = time_pruning(dense, example, args.ratio, args.round_to, args.prune_repeats)
        medians = {tool: statistics.median(times[1:] or times) for tool, times in seconds.items()}  # first: one-time warm-up
        theirs = medians["torch-pruning"]
        print(f"Torch-Pruning alone {theirs:.2f} s; graph build + removal {medians['graph + removal']:.2f} s "
              f"({medians['graph + removal'] / theirs:.2f}x); whole pa.Pruner incl. support check and scope "
              f"{medians['pa.Pruner']:.2f} s ({medians['pa.Pruner'] / theirs:.2f}x)")


if __name__ == "__main__":
    main()
