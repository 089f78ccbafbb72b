"""Which sparse LoRA keeps more quality: masking the adapter's update only at merge, or training through the masked product?

An MLP (64-256-256-10) is trained dense on scikit-learn's digits, pruned one-shot by magnitude
(80% of its two hidden Linears, or N:M with ``--nm 2:4``), then recovered by LoRA (rank 4 on both pruned Linears, base
frozen) in each mode; the merged models are evaluated on the held-out split. For ``merge`` the
unmerged (dense-update) model is evaluated too: the gap between the two is what the merge cuts.

    nice -n 5 python bench/lora_masking.py [--seeds 5] [--steps 300] [--sparsity 0.8 | --nm 2:4] [--out runs/lora_masking.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import peft
import torch
from torch import nn

from pruneaware.data import load_digits
from pruneaware.granularity import NM, Element, Granularity
from pruneaware.lora import SparseLoRA

HIDDEN = 256


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def fit(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], steps: int, lr: float, seed: int) -> None:
    x, y = data
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        index = torch.randint(0, len(y), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    logits = model(data[0])
    return {"loss": float(nn.functional.cross_entropy(logits, data[1])), "accuracy": float((logits.argmax(1) == data[1]).float().mean())}


def granularity(args: argparse.Namespace) -> tuple[Granularity, float]:
    """The pruning pattern and its sparsity: N:M from ``--nm`` (e.g. 2:4), else unstructured at ``--sparsity``."""
    if args.nm is None:
        return Element(), args.sparsity
    n, _, m = args.nm.partition(":")
    if not (n.isdigit() and m.isdigit()):
        raise SystemExit(f"--nm {args.nm!r}: expected N:M with whole numbers, e.g. 2:4")
    pattern = NM(int(n), int(m))
    return pattern, pattern.sparsity


def nm_kept(weight: torch.Tensor, pattern: Granularity) -> bool:
    """Whether every group of M consecutive input weights has at most N nonzeros (True for an unstructured pattern)."""
    if not isinstance(pattern, NM):
        return True
    return bool(((weight != 0).reshape(-1, pattern.m).sum(1) <= pattern.n).all())


def run(seed: int, args: argparse.Namespace, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]) -> dict[str, object]:
    torch.manual_seed(seed)
    dense = mlp()
    fit(dense, train, 400, 1e-3, seed)
    weights = {name: dense.get_submodule(name).weight for name in ("1", "3")}
    pattern, sparsity = granularity(args)
    masks = pattern.masks({name: w.detach().abs() for name, w in weights.items()}, sparsity)
    with torch.no_grad():
        for name, weight in weights.items():
            weight.mul_(masks[name])
    result: dict[str, object] = {"seed": seed, "dense_pruned": evaluate(dense, test)}
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    for mode in ("product", "merge"):
        base = mlp()
        base.load_state_dict(state)
        torch.manual_seed(seed + 1)
        model = peft.get_peft_model(base, peft.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=["1", "3"]))
        lora = SparseLoRA(model, mode=mode)
        fit(model, train, args.steps, args.lr, seed + 2)
        trained = evaluate(model, test)
        merged = lora.merge()
        merged_weights = [merged.get_submodule(n).weight for n in ("1", "3")]
        result[mode] = {
            "trained": trained,
            "merged": evaluate(merged, test),
            "sparsity": sum(int((w == 0).sum()) for w in merged_weights) / sum(w.numel() for w in weights.values()),
            "pattern_kept": all(nm_kept(w, pattern) for w in merged_weights),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--nm", default=None, help="prune N:M (e.g. 2:4) instead of unstructured --sparsity")
    parser.add_argument("--out", type=Path, default=Path("runs/lora_masking.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_digits()
    train, test = splits.train.tensors, splits.test.tensors
    runs = [run(seed, args, train, test) for seed in range(args.seeds)]
    summary = {}
    for key in ("product", "merge"):
        for stage in ("trained", "merged"):
            accuracies = [r[key][stage]["accuracy"] for r in runs]  # type: ignore[index]
            losses = [r[key][stage]["loss"] for r in runs]  # type: ignore[index]
            summary[f"{key} {stage}"] = {"accuracy_mean": statistics.mean(accuracies), "accuracy_sd": statistics.pstdev(accuracies), "loss_mean": statistics.mean(losses), "loss_sd": statistics.pstdev(losses)}
    pruned = [r["dense_pruned"]["accuracy"] for r in runs]  # type: ignore[index]
    summary["pruned, no fine-tune"] = {"accuracy_mean": statistics.mean(pruned), "accuracy_sd": statistics.pstdev(pruned)}
    for name, row in summary.items():
        print(f"{name:24s} accuracy {row['accuracy_mean']:.4f} ± {row['accuracy_sd']:.4f}" + (f"  loss {row['loss_mean']:.4f} ± {row['loss_sd']:.4f}" if "loss_mean" in row else ""))
    for key in ("product", "merge"):
        sparsities = sorted({round(r[key]["sparsity"], 4) for r in runs})  # type: ignore[index]
        print(f"{key} merged sparsity {sparsities}, pattern kept in every run: {all(r[key]['pattern_kept'] for r in runs)}")  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0], "load": os.getloadavg()}
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine, "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
