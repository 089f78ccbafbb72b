"""SmolLM2-135M pruned to about half its parameters (width + depth) and distilled, against the Minitron baselines.

Each ``--variant`` writes one JSON row to ``--out`` (on a shared CPU, run one per invocation so a lock is released between them):

- ``dense``: the pretrained model, evaluated only (the teacher of the ``*_kd`` variants);
- ``width_depth_kd``: ``gqa_width`` (448 of 1536 MLP neurons, attention whole) and ``depth``
  (6 of 30 layers, block influence) at step 0, then ``--tokens`` tokens of logit
  distillation from the dense model; ``width_depth_task``: the same shape trained on the
  next-token loss alone;
- ``depth_kd`` (19 layers removed) and ``width_kd`` (2 of 3 KV groups with their query heads, 427 neurons): about
  the same parameter count, each distilled on ``--tokens`` tokens;
- ``scratch``: the ``width_depth`` architecture from random initialization, trained on the
  next-token loss for ``--scratch-factor`` times ``--tokens`` tokens.

Width is ranked by activations on ``--calibration`` training batches (``--width-importance weight``:
by weight norms), depth by block influence per token on the same batches. ``--cut SPEC ...`` only
cuts copies of the dense model and prints each one's perplexity untrained (the diagnosis of a cut).

Perplexity is on held-out Shakespeare plays. ``--table`` assembles the rows and measures the
decode latency per token of every architecture side by side in one process (batch 1, KV cache,
random weights of each row's shape: latency depends on shapes only), interleaved, median.

    flock -s /tmp/pa-heavy.lock nice -n 10 .venv/bin/python bench/compress_smollm2.py --variant width_depth_kd --tokens 4096
    flock -s /tmp/pa-heavy.lock nice -n 10 .venv/bin/python bench/compress_smollm2.py --cut intermediate=768 remove=10 last=10
    .venv/bin/python bench/compress_smollm2.py --table
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import pruneaware as pa  # noqa: E402
from pruneaware.data.shakespeare import load_plays  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    # the best-measured shapes of the post-cut diagnosis (docs/compress.md) at about half the parameters
    "width_depth": {"intermediate": 448, "remove": 6},
    "depth": {"remove": 19},
    "width": {"kv_groups": 2, "intermediate": 427},
}
VARIANTS = {"dense": None, "width_depth_kd": "width_depth", "width_depth_task": "width_depth", "depth_kd": "depth", "width_kd": "width", "scratch": "width_depth"}


def recipe(shape: dict[str, Any], distill: bool, order: str, temperature: float, importance: str = "activation", calibration: int = 4) -> dict[str, Any]:
    """Stages for ``shape`` (width by ``importance`` and/or depth by block influence at step 0, in ``order``), with logit distillation first when ``distill``."""
    width = {k: shape[k] for k in ("kv_groups", "queries_per_group", "intermediate") if k in shape}
    stages: list[dict[str, Any]] = []
    if width:
        stages.append({"type": "gqa_width", **width, "importance": importance, "calibration_batches": calibration})
    if "remove" in shape:
        layers = shape.get("layers", ["model.layers.*"])
        depth = {"type": "depth", "remove": shape["remove"], "importance": "influence", "layers": layers, "calibration_batches": calibration}
        stages = [depth, *stages] if order == "depth-first" else [*stages, depth]
    if distill:
        stages.insert(0, {"type": "distill", "kl": 1.0, "temperature": temperature})
    return {"scope": {"include": ["*"]}, "stages": stages}


def shaped_config(config: Any, shape: dict[str, Any]) -> Any:
    """A copy of a Llama ``config`` with ``shape``'s layers, heads and MLP width (the architecture the pruned model ends with)."""
    config = config.__class__.from_dict(config.to_dict())
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_group = config.num_attention_heads // config.num_key_value_heads
    groups = shape.get("kv_groups", config.num_key_value_heads)
    config.head_dim = head_dim
    config.num_key_value_heads = groups
    config.num_attention_heads = groups * shape.get("queries_per_group", per_group)
    config.intermediate_size = shape.get("intermediate", config.intermediate_size)
    config.num_hidden_layers -= shape.get("remove", 0)
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[: config.num_hidden_layers]
    return config


def architecture(config: Any) -> dict[str, int]:
    """The shape fields of a Llama config that a row records."""
    keys = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size", "hidden_size", "head_dim")
    return {key: int(getattr(config, key)) for key in keys}


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warmup over the first 10% of steps, then cosine decay to 10% of ``peak``."""
    warmup = max(steps // 10, 1)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def train(model: nn.Module, windows: torch.Tensor, evaluation: torch.Tensor, args: argparse.Namespace, shape: dict[str, Any] | None, distill: bool, peak: float) -> dict[str, Any]:
    """Cut ``shape`` at step 0 through a Pruner (distilling when asked), then AdamW on next-token loss (+ KL) over ``windows``."""
    batches, device = list(windows.split(args.batch)), args.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    pruner = None
    if shape is not None:
        calibration = [(batch.to(device), None) for batch in batches[: args.calibration]]
        stages = recipe(shape, distill, args.order, args.temperature, args.width_importance, args.calibration)
        pruner = pa.Pruner(model, optimizer, stages, total_steps=len(batches), example_inputs=calibration[0][0][:1], calibration_data=calibration)
    start_perplexity = pa.llm.perplexity(model, evaluation) if shape is not None else None  # the cut, before any training
    losses: list[float] = []
    model.train()
    start, start_cpu = time.perf_counter(), time.process_time()
    for step, batch in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, len(batches), peak)
        batch = batch.to(device)
        with autocast:
            logits = model(batch).logits
            task = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
            loss = (pruner.penalty() if distill else task)  # with distillation the loss is the logit KL alone
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(task.item())
        if step % max(len(batches) // 10, 1) == 0 or step == len(batches) - 1:
            print(json.dumps({"step": step, "task_loss": losses[-1], "loss": loss.item(), "seconds": time.perf_counter() - start}), flush=True)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    teacher = pruner.stage("distill").teacher_seconds if distill and pruner is not None else 0.0
    if pruner is not None:
        pruner.finalize()
    model.eval()
    return {"perplexity_after_cut": start_perplexity, "train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "teacher_seconds": teacher, "steps": len(batches), "final_task_loss": statistics.fmean(losses[-max(len(losses) // 10, 1):])}


def load(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The dense model (on ``--device``), the held-out evaluation windows and the training token stream."""
    model, tokenizer = pa.llm.load_smollm2(args.asset)
    evaluation = pa.llm.spaced_windows(pa.llm.encode(tokenizer, load_plays("heldout")), args.seq, args.eval_windows).to(args.device)
    return model.to(args.device), evaluation, pa.llm.encode(tokenizer, load_plays("train"))


def run_variant(args: argparse.Namespace, variant: str, dense: nn.Module, evaluation: torch.Tensor, train_tokens: torch.Tensor) -> dict[str, Any]:
    """Prune a copy of ``dense`` (or build the from-scratch model), train and evaluate it; the row it returns is what ``--table`` reads."""
    started = time.perf_counter()
    shape = SHAPES[VARIANTS[variant]] if VARIANTS[variant] else None
    row: dict[str, Any] = {"variant": variant, "shape": shape, "dense_params": sum(p.numel() for p in dense.parameters())}
    if shape is None:
        row.update(tokens=0, perplexity=pa.llm.perplexity(dense, evaluation), params=row["dense_params"], config=architecture(dense.config), hf_config=dense.config.to_dict())
        return {**row, "wall_seconds": time.perf_counter() - started}
    tokens = args.tokens * (args.scratch_factor if variant == "scratch" else 1)
    steps = max(tokens // (args.batch * args.seq), 1)
    windows = pa.llm.random_windows(train_tokens, args.seq, steps * args.batch, seed=args.seed)
    torch.manual_seed(args.seed)
    if variant == "scratch":
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM(shaped_config(dense.config, shape)).to(args.device)
        stats = train(model, windows, evaluation, args, None, False, args.lr_scratch)
    else:
        model = copy.deepcopy(dense)
        stats = train(model, windows, evaluation, args, shape, variant.endswith("_kd"), args.lr)
    row.update(stats, tokens=steps * args.batch * args.seq, params=sum(p.numel() for p in model.parameters()), config=architecture(model.config))
    row.update(perplexity=pa.llm.perplexity(model, evaluation), hf_config=model.config.to_dict())
    return {**row, "wall_seconds": time.perf_counter() - started}


def parse_cut(spec: str, layers: int) -> dict[str, Any]:
    """A ``--cut`` spec (``queries_per_group=2,intermediate=768,remove=10``; ``last=K`` removes the K layers before the final one) as a shape."""
    shape: dict[str, Any] = {}
    for item in filter(None, spec.replace("dense", "").split(",")):
        key, _, value = item.partition("=")
        if key not in ("kv_groups", "queries_per_group", "intermediate", "remove", "last") or not value.isdigit():
            raise SystemExit(f"--cut {spec!r}: expected key=count items with keys kv_groups, queries_per_group, intermediate, remove, last")
        shape[key] = int(value)
    if "last" in shape:
        count = shape.pop("last")
        shape.update(remove=count, layers=[f"model.layers.{i}" for i in range(layers - 1 - count, layers - 1)])
    return shape


def cut_only(args: argparse.Namespace, spec: str, dense: nn.Module, evaluation: torch.Tensor, train_tokens: torch.Tensor) -> dict[str, Any]:
    """Prune a copy of ``dense`` to the ``--cut`` spec exactly as a variant does at step 0, and measure its held-out perplexity untrained."""
    shape = parse_cut(spec, dense.config.num_hidden_layers)
    if not shape:  # "dense": no cut
        return {"cut": spec, "params": sum(p.numel() for p in dense.parameters()), "params_fraction": 1.0, "perplexity": pa.llm.perplexity(dense, evaluation)}
    windows = pa.llm.random_windows(train_tokens, args.seq, args.calibration * args.batch, seed=args.seed)
    calibration = [(batch.to(args.device), None) for batch in windows.split(args.batch)]
    model = copy.deepcopy(dense)
    stages = recipe(shape, False, args.order, args.temperature, args.width_importance, args.calibration)
    pruner = pa.Pruner(model, None, stages, total_steps=1, example_inputs=calibration[0][0][:1], calibration_data=calibration)
    removed = list(pruner.stage("depth").removed) if "remove" in shape else []
    pruner.finalize()
    params = sum(p.numel() for p in model.parameters())
    return {
        "cut": spec, "importance": args.width_importance, "removed": removed, "params": params, "params_fraction": params / sum(p.numel() for p in dense.parameters()),
        "perplexity": pa.llm.perplexity(model, evaluation), "config": architecture(model.config),
    }


@torch.no_grad()
def decode_seconds(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> float:
    """Seconds per generated token, greedy with the KV cache, after a ``prompt`` prefill (batch 1)."""
    output = model(prompt, use_cache=True)
    cache, token = output.past_key_values, output.logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(new_tokens):
        output = model(token, past_key_values=cache, use_cache=True)
        cache, token = output.past_key_values, output.logits[:, -1:].argmax(-1)
    return (time.perf_counter() - start) / new_tokens


def latencies(configs: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, float]:
    """Median decode seconds per token of each architecture (a saved config), rounds interleaved across them in this one process."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    models = {name: LlamaForCausalLM(LlamaConfig.from_dict(config)).eval() for name, config in configs.items()}
    prompt = torch.randint(0, min(config["vocab_size"] for config in configs.values()), (1, args.seq))
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.latency_rounds):
        for name, model in models.items():
            times[name].append(decode_seconds(model, prompt, args.new_tokens))
    return {name: statistics.median(values) for name, values in times.items()}


def table(args: argparse.Namespace) -> str:
    """The rows in ``--out`` as a Markdown table, with decode latency per token measured now, side by side."""
    rows = {row["variant"]: row for row in map(json.loads, args.out.read_text().splitlines())}  # the last row of a variant wins
    seconds = latencies({name: row["hf_config"] for name, row in rows.items()}, args)
    dense = seconds.get("dense")
    lines = ["| variant | layers / heads / KV / MLP | parameters | tokens | perplexity after the cut | held-out perplexity | training wall time (s) | decode ms/token (x dense) |", "|---|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        if name not in rows:
            continue
        row, c = rows[name], rows[name]["config"]
        latency = f"{1000 * seconds[name]:.1f} ({seconds[name] / dense:.2f}x)" if dense and name in seconds else "-"
        cut = f"{row['perplexity_after_cut']:.0f}" if row.get("perplexity_after_cut") else "-"
        shape = f"{c['num_hidden_layers']} / {c['num_attention_heads']} / {c['num_key_value_heads']} / {c['intermediate_size']}"
        lines.append(f"| {name} | {shape} | {row['params']:,} ({row['params'] / row['dense_params']:.1%}) | {row['tokens']:,} | {cut} | {row['perplexity']:.2f} | {row.get('train_seconds', 0):.0f} | {latency} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs="+", choices=list(VARIANTS), help="one or more variants, run one after another in this process")
    parser.add_argument("--table", action="store_true", help="assemble the rows in --out and measure decode latency side by side")
    parser.add_argument("--tokens", type=int, default=4096, help="N: training tokens of every pruned variant (scratch gets --scratch-factor x N)")
    parser.add_argument("--scratch-factor", type=int, default=10)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of the pruned variants")
    parser.add_argument("--lr-scratch", type=float, default=1e-3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--order", choices=("width-first", "depth-first"), default="width-first")
    parser.add_argument("--calibration", type=int, default=4, help="training batches scored for block influence and activation importance")
    parser.add_argument("--width-importance", choices=("activation", "weight"), default="activation", help="how gqa_width ranks heads and neurons")
    parser.add_argument("--cut", nargs="+", metavar="SPEC", help="only cut copies of the dense model (e.g. intermediate=768 remove=10 last=5) and print their perplexity")
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (bf16 autocast)")
    parser.add_argument("--asset", type=Path, default=None, help="the SmolLM2 GGUF file (default: the smollm2 asset)")
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs/compress_smollm2.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.table:
        print(table(args))
        return
    if not args.variant and not args.cut:
        parser.error("one of --variant NAME [NAME ...], --cut SPEC [SPEC ...] or --table")
    started = time.perf_counter()
    dense, evaluation, train_tokens = load(args)
    load_seconds = time.perf_counter() - started
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else None
    for spec in args.cut or []:
        print(json.dumps({**cut_only(args, spec, dense, evaluation, train_tokens), "load": os.getloadavg()}), flush=True)
    for variant in args.variant or []:
        row = run_variant(args, variant, dense, evaluation, train_tokens)
        machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "load": os.getloadavg(), "gpu": gpu}
        row.update(load_seconds=load_seconds, args={k: str(v) for k, v in vars(args).items()}, machine=machine)
        print(json.dumps(row), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
