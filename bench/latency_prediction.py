"""How well does the latency table predict a model's measured end-to-end latency, dense and slim?

For each model and batch size: build the latency table (``pruneaware.hardware.build_table``, timed now, not
cached), then for the dense model and slim copies (channels removed by pruneaware: uniform ratios, and a
global ranking) print the predicted latency, the measured one (fastest of ``--repeats`` forwards, the
estimator the table uses, and the median of interleaved rounds), and the prediction error; the last column is the
error with the whole rest of the model scaled by the layer outputs left (no fixed part from the table's slim probe), and
the error of the predicted ratio to dense against the measured one (medians of interleaved rounds): what a latency
target, a fraction of dense, relies on, and what stays right when the machine's speed moved since the table was built.

    python bench/latency_prediction.py [--models resnet18 resnet50 mobilenet_v2 vit_b_16 cnn1d resnet20] [--batch 1 8] [--threads 1]
        [--backend torch|onnxruntime|cuda]

With ``--split`` (torch backend) each row also shows where the error lies: the predicted time of the timed layers and of
the rest (norms, activations, pooling, additions), beside the layers' time measured inside the model (forward hooks)
and the rest of its forward.

With ``--backend cuda`` layers and models are timed on the GPU with CUDA events (the median column, measured
with torch eager on the CPU, is left out); the models are built and pruned on the CPU and copied to the GPU to time.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import time

import torch
from torch import nn

import pruneaware as pa
from pruneaware.hardware import build_table, predict_latency
from pruneaware.hardware.predict import widths_of
from pruneaware.hardware.backends import backend
from pruneaware.hardware.keys import device_name
from pruneaware.measure import compare_latency
from pruneaware.structured.target import forward_macs

SHAPES = {"uniform 0.25": (0.25, "uniform"), "uniform 0.5": (0.5, "uniform"), "global 0.5": (0.5, "global")}


SMALL = {"cnn1d": (1, 40), "resnet20": (1, 28, 28)}
"""pruneaware's own small models at their data's input shape (MNIST-1D, MNIST): per-call overhead weighs most there."""


def build(name: str, image: int) -> tuple[nn.Module, torch.Tensor]:
    """The torchvision model as ``bench/structured_speed.py`` builds it (random weights, heads made prunable), or one of
    the ``SMALL`` models (``image`` unused)."""
    if name in SMALL:
        from pruneaware.models.cnn1d import CNN1d
        from pruneaware.models.resnet20 import ResNet20

        torch.manual_seed(0)
        model = {"cnn1d": CNN1d, "resnet20": ResNet20}[name](SMALL[name], 10)
        return model.eval(), torch.randn(1, *SMALL[name])
    from structured_speed import build as build_model

    return build_model(name, image)


def slim(model: nn.Module, example: torch.Tensor, ratio: float, allocation: str, round_to: int) -> nn.Module:
    copied = copy.deepcopy(model)
    schedule = {"type": "one_shot", "sparsity": ratio, "at": 0, "unit": "step"}
    structured = {"schedule": schedule, "allocation": allocation, "max_layer_ratio": 0.9, "round_to": round_to}
    pa.Pruner(copied, None, pa.Recipe.from_dict({"structured": structured}), total_steps=1, example_inputs=example)
    return copied.eval()


def _ms(value: float) -> str:
    """Milliseconds with 3 significant digits below 10 ms (small models run in a tenth of one), else one decimal."""
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _forward_ms(model: nn.Module, inputs: torch.Tensor) -> float:
    started = time.perf_counter()
    model(inputs)
    return (time.perf_counter() - started) * 1000


def in_model_split(model: nn.Module, inputs: torch.Tensor, layers: list[str], repeats: int) -> tuple[float, float]:
    """Median milliseconds of a forward spent inside the modules named ``layers`` (timed where they run, by forward
    hooks) and outside them (the hook-free forward less that)."""
    modules, spent, starts = dict(model.named_modules()), [0.0], {}

    def before(module: nn.Module, args: object) -> None:
        starts[id(module)] = time.perf_counter()

    def after(module: nn.Module, args: object, output: object) -> None:
        spent[0] += time.perf_counter() - starts.pop(id(module))

    with torch.no_grad():
        total = statistics.median(_forward_ms(model, inputs) for _ in range(repeats))
        handles = [h for name in layers for h in (modules[name].register_forward_pre_hook(before), modules[name].register_forward_hook(after))]
        inside = []
        for _ in range(repeats):
            spent[0] = 0.0
            model(inputs)
            inside.append(spent[0] * 1000)
        for handle in handles:
            handle.remove()
    return statistics.median(inside), total - statistics.median(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenet_v2", "vit_b_16"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--split", action="store_true", help="also the predicted layers and rest beside those measured inside the model (torch backend)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    print(f"{backend(args.backend).versions()}, {device_name(args.backend)}, backend {args.backend}, {args.threads} threads, image {args.image}, "
          f"round_to {args.round_to}, load average at start {os.getloadavg()[0]:.1f}")
    print("| model | batch | shape | MACs ratio | predicted ms | measured ms (fastest) | error | measured ms (median) | error | error, rest all per channel | error of the ratio to dense (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    timer = backend(args.backend).time_ms
    for name in args.models:
        dense, example = build(name, args.image)
        models = {"dense": dense} | {label: slim(dense, example, r, a, args.round_to) for label, (r, a) in SHAPES.items()}
        macs = {label: forward_macs(m, example) for label, m in models.items()}
        for batch in args.batch:
            started = time.perf_counter()
            table = build_table(dense, example, backend=args.backend, batch=batch, round_to=args.round_to, threads=args.threads, progress=False)
            seconds = time.perf_counter() - started
            inputs = example[:1].expand(batch, *example.shape[1:]).contiguous()
            print(f"<!-- {name} batch {batch}: fixed rest {table.rest_fixed_ms:.2f} ms of {table.dense_ms:.2f} -->", flush=True)
            proportional = dataclasses.replace(table, rest_fixed_ms=0.0)  # the rest scaled by the outputs left, as before the probe
            medians = compare_latency(models, inputs, warmup=2, repeats=args.repeats, threads=args.threads) if args.backend == "torch" else {}
            for label, model in models.items():
                predicted = predict_latency(model, table)
                fastest = timer(copy.deepcopy(model), inputs, args.repeats)  # a copy: the CUDA timer moves what it times
                median = medians[label].median_ms if label in medians else float("nan")
                # what a latency target (a fraction of dense) depends on, measured side by side: immune to the machine's speed moving
                ratio_error = (predicted / table.dense_ms) / (median / medians["dense"].median_ms) - 1 if medians else float("nan")
                print(f"| {name} | {batch} | {label} | {macs['dense'] / macs[label]:.2f}x | {_ms(predicted)} | {_ms(fastest)} | "
                      f"{100 * (predicted / fastest - 1):+.1f}% | {_ms(median)} | {100 * (predicted / median - 1):+.1f}% | "
                      f"{100 * (predict_latency(model, proportional) / fastest - 1):+.1f}% | {100 * ratio_error:+.1f}% |", flush=True)
                if args.split:
                    widths = widths_of(model, table)
                    layers = sum(table.layer_ms(n, i, o) for n, (i, o) in widths.items())
                    inside, outside = in_model_split(model, inputs, list(table.contexts), 2 * args.repeats)
                    print(f"<!-- {label}: predicted layers {layers:.2f} ms + rest {predicted - layers:.2f} ms; inside the model "
                          f"layers {inside:.2f} ms + rest {outside:.2f} ms -->", flush=True)
            print(f"<!-- {name} batch {batch}: table built in {seconds:.0f} s, load average {os.getloadavg()[0]:.1f} -->", flush=True)


if __name__ == "__main__":
    main()
