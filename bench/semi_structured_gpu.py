"""Do 2:4 masks from pruneaware buy real GPU speed once converted to semi-structured sparse tensors?

For Linear layers of transformer shapes and several token counts, in float16 and bfloat16: a random
weight is masked 2:4 along its input dimension by ``pruneaware.granularity.NM(2, 4)`` (magnitude
scores, the pattern training produces), then converted with ``torch.sparse.to_sparse_semi_structured``
through each kernel back-end that works on the GPU at hand (CUTLASS, cuSPARSELt; any other is named
with the reason it was left out). Each conversion must reproduce the masked
weight exactly, its output is compared with the dense masked ``F.linear``, and dense and converted
variants are timed side by side with CUDA events (interleaved samples, median):

- *eager*: the queue is drained before each sample, so Python dispatch and launch costs count, as
  they do for a model run call by call;
- *graph*: the same calls captured in a CUDA graph and replayed, which leaves GPU time alone.

Every sample rotates over enough distinct weights to overflow the L2 cache, so weights stream from
device memory as they do in a whole model. A Linear-GELU-Linear block with both layers converted
gives an end-to-end figure.

    python bench/semi_structured_gpu.py [--shapes 768x3072 4096x4096] [--rows 1 64 512 4096]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import statistics
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

from pruneaware.granularity import NM

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
BACKENDS = ("cutlass", "cusparselt")
NAMES = {"dense": "dense", "cutlass": "CUTLASS", "cusparselt": "cuSPARSELt"}
STREAMED_BYTES = 256 * 2**20  # weights touched per sample: several times the L2 cache of current GPUs
MAX_COPIES = 64

Pass = Callable[[], None]


@dataclass
class Row:
    """One measured case: timings in ms per call, keyed by variant then mode, and the accuracy check."""

    label: str
    rows: int
    dtype: str
    ms: dict[str, dict[str, float | None]]
    max_abs: dict[str, float]
    rel: dict[str, float]


def parse_pair(text: str) -> tuple[int, int]:
    """'768x3072' -> (768, 3072): a layer's (in, out) features, or a block's (model, hidden) width."""
    first, second = text.lower().split("x")
    return int(first), int(second)


def mask_2_4(weight: Tensor) -> Tensor:
    """The weight with pruneaware's 2:4 magnitude mask applied (two of every four input weights kept)."""
    keep = NM(2, 4).masks({"weight": weight.abs()}, 0.5)["weight"]
    return weight * keep


def convert(weight: Tensor, backend: str) -> SparseSemiStructuredTensor:
    """Compress a 2:4 weight for ``backend`` through the public entry point, which reads the CUTLASS flag."""
    previous = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    try:
        sparse = to_sparse_semi_structured(weight)
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = previous
    if sparse.BACKEND != backend:
        raise RuntimeError(f"asked for {backend}, got {sparse.BACKEND}")
    if not torch.equal(sparse.to_dense(), weight):
        raise RuntimeError(f"{backend} compression changed the weight: the 2:4 groups do not match its layout")
    return sparse


def copies_for(weight_bytes: int) -> int:
    """How many distinct weights one sample rotates over so the whole set overflows the L2 cache."""
    return max(2, min(MAX_COPIES, math.ceil(STREAMED_BYTES / weight_bytes)))


def capture(run: Pass) -> Pass:
    """Record one pass of ``run`` as a CUDA graph (after a warm-up on a side stream) and return its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def median_ms(passes: dict[str, Pass], calls: int, repeats: int) -> dict[str, float]:
    """Median ms per call of each pass, one sample of each in turn with the order rotated, from an idle GPU."""
    names = list(passes)
    for run in passes.values():  # warm-up: kernel selection, handles, allocator
        run()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(repeats):
        for offset in range(len(names)):
            name = names[(index + offset) % len(names)]
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            passes[name]()
            end.record()
            end.synchronize()
            samples[name].append(start.elapsed_time(end) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(
    label: str, rows: int, dtype_name: str, dense: list[Pass], sparse: dict[str, list[Pass]], repeats: int,
    failures: list[str],
) -> dict[str, dict[str, float | None]]:
    """Eager and graph-replay ms per call for the dense calls and each back-end's calls (None where one failed)."""
    variants = {"dense": dense, **sparse}

    def one_pass(calls: list[Pass]) -> Pass:
        def run() -> None:
            for call in calls:
                call()

        return run

    eager = median_ms({name: one_pass(calls) for name, calls in variants.items()}, len(dense), repeats)
    graphs: dict[str, Pass] = {}
    for name, calls in variants.items():
        try:
            graphs[name] = capture(one_pass(calls))
        except RuntimeError as error:
            failures.append(f"{label} rows={rows} {dtype_name} {name}: graph capture failed: {error}")
    replayed = median_ms(graphs, len(dense), repeats) if graphs else {}
    return {name: {"eager": eager[name], "graph": replayed.get(name)} for name in variants}


def compare(reference: Tensor, output: Tensor) -> tuple[float, float]:
    """Max absolute difference and relative Frobenius difference of ``output`` against ``reference``."""
    diff = output.float() - reference.float()
    return diff.abs().max().item(), (diff.norm() / reference.float().norm()).item()


def linear_case(
    features: tuple[int, int], rows: int, dtype_name: str, backends: list[str], repeats: int, failures: list[str]
) -> Row:
    """One Linear layer (no bias): dense masked ``F.linear`` against each back-end's compressed weight."""
    in_features, out_features = features
    dtype = DTYPES[dtype_name]
    label = f"Linear {in_features}→{out_features}"
    copies = copies_for(in_features * out_features * dtype.itemsize)
    weights = [
        mask_2_4(torch.randn(out_features, in_features, device="cuda", dtype=dtype) / math.sqrt(in_features))
        for _ in range(copies)
    ]
    inputs = torch.randn(rows, in_features, device="cuda", dtype=dtype)
    reference = F.linear(inputs, weights[0])
    dense = [lambda weight=weight: F.linear(inputs, weight) for weight in weights]
    sparse: dict[str, list[Pass]] = {}
    max_abs: dict[str, float] = {}
    rel: dict[str, float] = {}
    for backend in backends:
        try:
            compressed = [convert(weight, backend) for weight in weights]
            max_abs[backend], rel[backend] = compare(reference, F.linear(inputs, compressed[0]))
        except (RuntimeError, NotImplementedError, ValueError) as error:
            failures.append(f"{label} rows={rows} {dtype_name} {backend}: {error}")
            continue
        sparse[backend] = [lambda weight=weight: F.linear(inputs, weight) for weight in compressed]
    ms = measure(label, rows, dtype_name, dense, sparse, repeats, failures)
    return Row(label, rows, dtype_name, ms, max_abs, rel)


def mlp_block(width: int, hidden: int, dtype: torch.dtype) -> nn.Sequential:
    """A transformer MLP (Linear-GELU-Linear, with biases) whose two weights carry pruneaware's 2:4 mask."""
    block = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)).to("cuda", dtype)
    for layer in (block[0], block[2]):
        layer.weight.copy_(mask_2_4(layer.weight))
    return block


def sparse_block(block: nn.Sequential, backend: str) -> nn.Sequential:
    """A copy of ``block`` with both Linear weights compressed for ``backend``."""
    converted = copy.deepcopy(block)
    for layer in (converted[0], converted[2]):
        layer.weight = nn.Parameter(convert(layer.weight.detach(), backend), requires_grad=False)
    return converted


def mlp_case(
    widths: tuple[int, int], rows: int, dtype_name: str, backends: list[str], repeats: int, failures: list[str]
) -> Row:
    """A whole MLP block, dense masked against both Linears compressed, over the same inputs."""
    width, hidden = widths
    dtype = DTYPES[dtype_name]
    label = f"MLP {width}→{hidden}→{width}"
    copies = copies_for(2 * width * hidden * dtype.itemsize)
    blocks = [mlp_block(width, hidden, dtype) for _ in range(copies)]
    inputs = torch.randn(rows, width, device="cuda", dtype=dtype)
    reference = blocks[0](inputs)
    dense = [lambda block=block: block(inputs) for block in blocks]
    sparse: dict[str, list[Pass]] = {}
    max_abs: dict[str, float] = {}
    rel: dict[str, float] = {}
    for backend in backends:
        try:
            converted = [sparse_block(block, backend) for block in blocks]
            max_abs[backend], rel[backend] = compare(reference, converted[0](inputs))
        except (RuntimeError, NotImplementedError, ValueError) as error:
            failures.append(f"{label} rows={rows} {dtype_name} {backend}: {error}")
            continue
        sparse[backend] = [lambda block=block: block(inputs) for block in converted]
    ms = measure(label, rows, dtype_name, dense, sparse, repeats, failures)
    return Row(label, rows, dtype_name, ms, max_abs, rel)


def cell(ms: dict[str, dict[str, float | None]], variant: str, mode: str) -> str:
    """'0.123 (1.45x)': ms per call and speedup over dense in the same mode, or 'n/a'."""
    value = ms.get(variant, {}).get(mode)
    if value is None:
        return "n/a"
    if variant == "dense":
        return f"{value:.4f}"
    return f"{value:.4f} ({ms['dense'][mode] / value:.2f}x)"


def table(rows: list[Row], backends: list[str]) -> str:
    """The results as a Markdown table, with columns for the back-ends that were measured."""
    variants = ["dense", *backends]
    names = [NAMES[variant] for variant in variants]
    header = [f"{name} ms" for name in names] + [f"{name} ms (graph)" for name in names]
    lines = [
        f"| case | rows | dtype | {' | '.join(header)} | max abs diff | rel diff |",
        "|---|---|---|" + "---|" * (len(header) + 2),
    ]
    for row in rows:
        diffs = " / ".join(f"{row.max_abs[b]:.2e}" if b in row.max_abs else "n/a" for b in backends)
        worst = f"{max(row.rel.values()):.1e}" if row.rel else "n/a"
        cells = [cell(row.ms, variant, mode) for mode in ("eager", "graph") for variant in variants]
        lines.append(f"| {row.label} | {row.rows} | {row.dtype} | {' | '.join(cells)} | {diffs} | {worst} |")
    return "\n".join(lines)


def usable_backends() -> list[str]:
    """The back-ends that compress and multiply a small 2:4 matrix on this GPU; says why any other is left out."""
    weight = mask_2_4(torch.randn(128, 128, device="cuda", dtype=torch.float16))
    inputs = torch.randn(64, 128, device="cuda", dtype=torch.float16)
    usable = []
    for backend in BACKENDS:
        if backend == "cusparselt" and not torch.backends.cusparselt.is_available():
            print(f"{NAMES[backend]}: left out, this torch build has no cuSPARSELt")
            continue
        try:
            F.linear(inputs, convert(weight, backend))
        except (RuntimeError, NotImplementedError, ValueError) as error:
            print(f"{NAMES[backend]}: left out, unsupported here: {error}")
            continue
        usable.append(backend)
    return usable


def host_overhead(repeats: int) -> None:
    """Where eager cuSPARSELt time goes: the raw matmul op against the same op behind ``F.linear``'s dispatch."""
    weight = mask_2_4(torch.randn(4096, 4096, device="cuda", dtype=torch.float16) / 64)
    inputs = torch.randn(512, 4096, device="cuda", dtype=torch.float16)
    sparse = convert(weight, "cusparselt")
    calls = 16

    def repeated(call: Pass) -> Pass:
        def run() -> None:
            for _ in range(calls):
                call()

        return run

    ms = median_ms(
        {
            "dense F.linear": repeated(lambda: F.linear(inputs, weight)),
            "torch._cslt_sparse_mm": repeated(lambda: torch._cslt_sparse_mm(sparse.packed, inputs.t())),
            "F.linear on the converted weight": repeated(lambda: F.linear(inputs, sparse)),
        },
        calls,
        repeats,
    )
    print("eager ms per call, Linear 4096→4096, 512 rows, fp16: "
          + ", ".join(f"{name} {value:.4f}" for name, value in ms.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["768x3072", "3072x768", "4096x4096", "4096x11008", "11008x4096"],
                        help="Linear (in)x(out) features")
    parser.add_argument("--mlp", nargs="+", default=["768x3072", "4096x11008"], help="MLP (width)x(hidden)")
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 64, 512, 4096], help="tokens per call")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=30, help="timed samples per variant and mode")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("semi_structured_gpu: no CUDA device here; 2:4 semi-structured kernels need an NVIDIA GPU "
              "(compute capability 8.0 or newer), so nothing was measured.")
        return
    capability = torch.cuda.get_device_capability()
    if capability < (8, 0):
        print(f"semi_structured_gpu: {torch.cuda.get_device_name()} has compute capability {capability}; "
              "2:4 semi-structured kernels need 8.0 or newer, so nothing was measured.")
        return
    print(f"date {datetime.date.today()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"GPU {torch.cuda.get_device_name()} (sm_{capability[0]}{capability[1]}), "
          f"cuSPARSELt {torch.backends.cusparselt.version()}")
    warnings.filterwarnings("ignore", message="The PyTorch API of SparseSemiStructuredTensor is in prototype stage")
    torch.manual_seed(0)
    failures: list[str] = []
    results: list[Row] = []
    with torch.no_grad():
        backends = usable_backends()
        if not backends:
            print("semi_structured_gpu: no 2:4 back-end works on this GPU, so nothing was measured.")
            return
        if "cusparselt" in backends:
            host_overhead(args.repeats)
        for make, pairs in ((linear_case, args.shapes), (mlp_case, args.mlp)):
            for pair in pairs:
                for dtype_name in args.dtypes:
                    for rows in args.rows:
                        results.append(make(parse_pair(pair), rows, dtype_name, backends, args.repeats, failures))
                        torch.cuda.empty_cache()
                        print(table(results[-1:], backends).splitlines()[-1], flush=True)
    print()
    print(table(results, backends))
    for failure in failures:
        print(f"failed: {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
