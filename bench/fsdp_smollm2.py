"""SmolLM2-135M pruning-aware training under DDP vs FSDP2 (fully_shard per decoder layer and at the root) on gloo CPU ranks.

Per rank: peak resident memory during the training steps (heap the model's loading left behind is
returned to the OS first) and the bytes of the tensors it holds (parameters, gradients, AdamW
moments, masks: whole under DDP, shards under FSDP2). Under FSDP2 also the step-time overhead of
masking on shards: masked and unmasked steps alternate on one model (the Pruner driven by hand,
``before_step``/``step`` only on masked steps; pairs in alternating order): the median of the
per-pair ratios, and the time of the Pruner's masking calls alone against the unmasked step
(less exposed to the machine's noise than a ratio of two whole steps). Mask agreement: before
sharding every rank computes the unsharded per-layer cut of the full weights (``Element.masks``); after the distributed selection each rank
gathers every mask, one layer at a time, and compares digests. 50% per-layer magnitude pruning of
the block Linears at step 0 (``pa.llm.sparse_finetune(0.5)``); random token windows (speed and
memory do not depend on text). ``--random-init`` builds SmolLM2-135M's architecture with random
weights instead of reading the asset (for machines without it; speed and memory are the same).

    nice -n 10 python bench/fsdp_smollm2.py [--configs fsdp2:2 ddp:2 fsdp2:4 ddp:4] [--steps 6] [--seq 64] [--threads 1] [--random-init]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from peak_memory import PeakRSS, release_freed, resident_mib  # bench/ is on the path when this script runs
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

import pruneaware as pa
from pruneaware.distributed import digest, launch
from pruneaware.distributed.fsdp_masks import like_param
from pruneaware.granularity import Element
from pruneaware.stages.prune import keep_pruned

SPARSITY = 0.5
SMOLLM2_135M = {  # the asset's LlamaConfig (SmolLM2-135M), for --random-init
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "hidden_act": "silu", "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
}


def local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def build(folder: Path) -> nn.Module:
    """The model every rank starts from: the asset's weights if saved in ``folder``, else random (same seed on every rank)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    if (folder / "model.pt").exists():
        model.load_state_dict(torch.load(folder / "model.pt", mmap=True, weights_only=True))
    return model


def unsharded_cut(model: nn.Module, names: list[str]) -> dict[str, str]:
    """Digest of each layer's 50% magnitude cut computed on the full weight (the reference for the sharded selection)."""
    params = dict(model.named_parameters())
    out = {}
    for name in names:
        weight = params[name].detach()
        out[name] = digest(keep_pruned(Element(scope="layer"), {name: weight.abs()}, {name: weight != 0}, SPARSITY)[name])
    return out


def mask_agreement(pruner: pa.Pruner, reference: dict[str, str]) -> dict[str, Any]:
    """Gather each sharded mask (one layer at a time) and compare it with the unsharded cut."""
    equal, digests = 0, []
    for (name, mask), param in zip(pruner.masks.masks.items(), pruner.params.values()):
        full = like_param(mask, param).full_tensor()
        digests.append(digest(full))
        equal += digests[-1] == reference[name]
    return {"layers": len(digests), "layers_equal_to_unsharded": equal, "mask_digest": digest(torch.tensor([int(d[:8], 16) for d in digests]))}


def worker(mode: str, args: argparse.Namespace, folder: str) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    import transformers  # noqa: F401  (loaded before the runtime's memory is read)

    runtime_mib = resident_mib()
    model = build(Path(folder))
    recipe = pa.llm.sparse_finetune(SPARSITY)
    reference = unsharded_cut(model, list(recipe.scope.build().select(model))) if mode == "fsdp2" else {}
    if mode == "ddp":
        model = DistributedDataParallel(model, gradient_as_bucket_view=True)
    else:
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    bare = model.module if isinstance(model, DistributedDataParallel) else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    started = time.perf_counter()
    pruner = pa.Pruner(model, None, recipe, total_steps=10**6)
    prune_seconds = time.perf_counter() - started
    agreement = mask_agreement(pruner, reference) if mode == "fsdp2" else {}
    release_freed()
    built_mib = resident_mib()
    generator = torch.Generator().manual_seed(rank)
    times: dict[bool, list[float]] = {True: [], False: []}
    mask_times: list[float] = []  # the Pruner's own calls in each masked step (masking gradients, then weights)
    pairs = args.steps + 1  # the first pair warms up (optimizer state allocated) and is not timed
    with PeakRSS() as peak:
        for index in range(2 * pairs if mode == "fsdp2" else pairs):
            pair = index // 2
            masked = mode == "ddp" or (index % 2 == pair % 2)  # masked first in even pairs, second in odd ones
            ids = torch.randint(0, bare.config.vocab_size, (args.batch, args.seq), generator=generator)
            dist.barrier()
            start = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            mark = time.perf_counter()
            if masked:
                pruner.before_step()
            masking = time.perf_counter() - mark
            optimizer.step()
            mark = time.perf_counter()
            if masked:
                pruner.step()
            masking += time.perf_counter() - mark
            if (pair if mode == "fsdp2" else index) >= 1:
                times[masked].append(time.perf_counter() - start)
                if masked:
                    mask_times.append(masking)
    tensors = [*model.parameters()] + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
    held = sum(local_bytes(t) for t in tensors) + sum(m.numel() for m in pruner.masks.masks.values())
    result: dict[str, Any] = {
        "rank": rank, "world": world, "mode": mode, "runtime_rss_mb": runtime_mib, "built_rss_mb": built_mib,
        "peak_rss_mb": peak.mib, "tensor_mb": held / 2**20, "prune_s": prune_seconds, "step_s": statistics.median(times[True]),
    }
    if mode == "fsdp2":
        result["unmasked_step_s"] = statistics.median(times[False])
        result["overhead"] = [m / u for m, u in zip(times[True], times[False])]
        result["mask_s"] = statistics.median(mask_times)
        result.update(agreement, sparsity=pruner.masks.sparsity())
    Path(folder, f"{mode}-{world}-rank{rank}.json").write_text(json.dumps(result))


def prepare(folder: Path, random_init: bool) -> None:
    """Save the config (and, from the asset, the weights) where every rank reads them."""
    from transformers import LlamaConfig

    (folder / "model.pt").unlink(missing_ok=True)
    if random_init:
        LlamaConfig(**SMOLLM2_135M).save_pretrained(folder)
        return
    model, _ = pa.llm.load_smollm2()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "model.pt")


def summary(config: str, ranks: list[dict[str, Any]]) -> str:
    line = (f"{config}: peak RSS/rank {max(r['peak_rss_mb'] for r in ranks):.0f} MiB (runtime alone {max(r['runtime_rss_mb'] for r in ranks):.0f}), "
            f"tensors/rank {max(r['tensor_mb'] for r in ranks):.0f} MiB, step {max(r['step_s'] for r in ranks):.2f} s")
    if ranks[0]["mode"] == "fsdp2":
        ratios = [statistics.median(r["overhead"]) for r in ranks]
        masking = max(r["mask_s"] / r["unmasked_step_s"] for r in ranks)
        line += (f", masked/unmasked {max(ratios):.3f} (median of {len(ranks[0]['overhead'])} pairs per rank, max over ranks), "
                 f"masking calls alone {masking:.4f} of an unmasked step; "
                 f"masks: {ranks[0]['layers_equal_to_unsharded']}/{ranks[0]['layers']} layers equal to the unsharded cut, "
                 f"digests equal on all ranks: {len({r['mask_digest'] for r in ranks}) == 1}, sparsity {ranks[0]['sparsity']:.3f}")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["fsdp2:2", "ddp:2", "fsdp2:4", "ddp:4"], help="mode:ranks, mode fsdp2 or ddp")
    parser.add_argument("--steps", type=int, default=6, help="timed masked (and as many unmasked) steps after one warm-up pair")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--random-init", action="store_true", help="SmolLM2-135M's architecture with random weights (no asset needed)")
    parser.add_argument("--out", type=Path, default=Path("runs/fsdp_smollm2.json"))
    args = parser.parse_args()
    configs = [(mode, int(world)) for mode, world in (c.split(":") for c in args.configs)]
    if any(mode not in ("fsdp2", "ddp") for mode, _ in configs):
        parser.error("--configs: each is fsdp2:N or ddp:N")
    folder = args.out.parent / "fsdp_smollm2"
    folder.mkdir(parents=True, exist_ok=True)
    prepare(folder, args.random_init)
    results = []
    for mode, world in configs:
        start = time.perf_counter()
        launch(worker, world, (mode, args, str(folder)), threads=args.threads)
        ranks = [json.loads((folder / f"{mode}-{world}-rank{r}.json").read_text()) for r in range(world)]
        results.append({"config": f"{mode}:{world}", "wall_s": time.perf_counter() - start, "ranks": ranks})
        print(summary(f"{mode}:{world}", ranks), flush=True)
        machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "load": os.getloadavg()}
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine, "results": results}, indent=1))


if __name__ == "__main__":
    main()
