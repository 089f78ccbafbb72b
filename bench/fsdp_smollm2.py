"""SmolLM2-135M pruning-aware training under DDP vs FSDP2 (fully_shard per decoder layer and at the root) on gloo CPU ranks.

Per rank: resident memory at its peak during training steps, and the bytes of the tensors it holds
(parameters, gradients, AdamW moments, masks: whole under DDP, shards under FSDP2). Under FSDP2 also
the step-time overhead of masking on shards: masked and unmasked steps alternate in one run on
one model (the Pruner driven by hand, ``before_step``/``step`` only on masked steps), and the ratio
of their medians is reported. Mask agreement: every rank gathers the masks the distributed
selection decided and the full weights, and checks them against the unsharded cut of the same
weights (``Element.masks``), layer by layer. 50% per-layer magnitude pruning of the block Linears
at step 0 (``pa.llm.sparse_finetune(0.5)``); random token windows (speed and memory do not depend on text).

    nice -n 5 python bench/fsdp_smollm2.py [--configs fsdp2:2 ddp:2 fsdp2:4 ddp:4] [--steps 6] [--seq 64] [--out runs/fsdp_smollm2.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

import pruneaware as pa
from pruneaware.distributed import digest, launch
from pruneaware.distributed.fsdp_masks import like_param
from pruneaware.granularity import Element
from pruneaware.stages.prune import keep_pruned


class PeakRSS:
    """The largest resident set size seen while running (sampled every 20 ms)."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def build(weights: str, mode: str) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(Path(weights).parent)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(torch.load(weights, mmap=True, weights_only=True))
    if mode == "ddp":
        return DistributedDataParallel(model)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def mask_agreement(pruner: pa.Pruner, before: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The masks the shards agreed on, gathered, against the unsharded cut of the same (gathered) weights."""
    masks = {n: like_param(m, p).full_tensor() for (n, m), p in zip(pruner.masks.masks.items(), pruner.params.values())}
    reference = keep_pruned(Element(scope="layer"), {n: w.abs() for n, w in before.items()}, {n: w != 0 for n, w in before.items()}, 0.5)
    return {
        "layers": len(masks),
        "layers_equal_to_unsharded": sum(bool(torch.equal(masks[n], reference[n])) for n in masks),
        "mask_digest": digest(torch.cat([m.flatten() for m in masks.values()])),
    }


def worker(mode: str, args: argparse.Namespace, weights: str, folder: str) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    model = build(weights, mode)
    gc.collect()
    bare = model.module if isinstance(model, DistributedDataParallel) else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    recipe = pa.llm.sparse_finetune(0.5)
    before = {n: p.detach().full_tensor() for n, p in recipe.scope.build().select(bare).items()} if mode == "fsdp2" else {}
    started = time.perf_counter()
    pruner = pa.Pruner(bare if mode == "fsdp2" else model, None, recipe, total_steps=10**6)
    prune_seconds = time.perf_counter() - started
    agreement = mask_agreement(pruner, before) if mode == "fsdp2" else {}
    del before
    gc.collect()
    generator = torch.Generator().manual_seed(rank)
    times: dict[bool, list[float]] = {True: [], False: []}
    with PeakRSS() as rss:
        for index in range(2 * args.steps + 2):
            masked = index % 2 == 0 if mode == "fsdp2" else True
            ids = torch.randint(0, 49152, (args.batch, args.seq), generator=generator)
            dist.barrier()
            start = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            if masked:
                pruner.before_step()
            optimizer.step()
            if masked:
                pruner.step()
            if index >= 2:  # the first pair warms up (optimizer state allocated)
                times[masked].append(time.perf_counter() - start)
    tensors = [*model.parameters()] + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    held = sum(local_bytes(t) for t in tensors) + sum(m.numel() for m in pruner.masks.masks.values())
    result: dict[str, Any] = {"rank": rank, "world": world, "mode": mode, "peak_rss_mb": rss.peak / 2**20, "tensor_mb": held / 2**20, "prune_s": prune_seconds}
    result["step_s"] = statistics.median(times[True])
    if mode == "fsdp2":
        result["unmasked_step_s"] = statistics.median(times[False])
        result["overhead"] = [m / u for m, u in zip(times[True], times[False])]
        result.update(agreement, sparsity=pruner.masks.sparsity())
    Path(folder, f"{mode}-{world}-rank{rank}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["fsdp2:2", "ddp:2", "fsdp2:4", "ddp:4"])
    parser.add_argument("--steps", type=int, default=6, help="masked (and as many unmasked) steps measured")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/fsdp_smollm2.json"))
    args = parser.parse_args()
    folder = args.out.parent / "fsdp_smollm2"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.pt"
    model, _ = pa.llm.load_smollm2()
    weights_dir = weights.parent
    model.config.save_pretrained(weights_dir)
    torch.save(model.state_dict(), weights)
    del model
    gc.collect()
    results = []
    for config in args.configs:
        mode, world = config.split(":")
        start = time.perf_counter()
        launch(worker, int(world), (mode, args, str(weights), str(folder)), threads=1)
        ranks = [json.loads((folder / f"{mode}-{world}-rank{r}.json").read_text()) for r in range(int(world))]
        results.append({"config": config, "wall_s": time.perf_counter() - start, "ranks": ranks})
        peak = max(r["peak_rss_mb"] for r in ranks)
        line = f"{config}: peak RSS/rank {peak:.0f} MiB, tensors/rank {max(r['tensor_mb'] for r in ranks):.0f} MiB, step {max(r['step_s'] for r in ranks):.2f} s"
        if mode == "fsdp2":
            ratios = [statistics.median(r["overhead"]) for r in ranks]
            line += f", masked/unmasked {max(ratios):.3f} (median per rank, max over ranks); masks: {ranks[0]['layers_equal_to_unsharded']}/{ranks[0]['layers']} layers equal to the unsharded cut, digests equal on all ranks: {len({r['mask_digest'] for r in ranks}) == 1}"
        print(line, flush=True)
        machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "load": os.getloadavg()}
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine, "results": results}, indent=1))


if __name__ == "__main__":
    main()
