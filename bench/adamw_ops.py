"""Where torch's default AdamW spends the masked transformer's extra update time: each of its operations timed.

The ``bench/train_step.py`` transformer (4 layers, d_model 256, FFN 1024, 90% masks on every Linear)
is trained a few steps dense and masked by pruneaware from the same weights; then the operations of
``torch.optim.adam._single_tensor_adam`` (AdamW's CPU default) are replayed one by one on copies of
each run's parameters, gradients and moments, interleaved, and timed (median per operation, summed
over the parameters). A third state, "denormal", is the masked one with the pruned moments set to
1e-40, what a weight pruned long after training began decays to. The masked moments are also counted:
how many pruned entries are exact zeros and how many are denormal. Whole ``AdamW.step()`` calls on
the same states, default, ``foreach=True`` and ``fused=True``, are timed beside them.

    python bench/adamw_ops.py [--rounds 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from latency import environment
from torch import Tensor
from train_step import transformer

import pruneaware as pa

LR, BETA1, BETA2, EPS, DECAY, STEP = 1e-4, 0.9, 0.999, 1e-8, 0.01, 10
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def trained_states(steps: int) -> tuple[dict[str, list[dict[str, Tensor]]], dict[int, Tensor]]:
    """Per state kind, every parameter's tensors (param, grad, exp_avg, exp_avg_sq) after ``steps`` AdamW steps; the masks by position."""
    case = transformer()
    torch.manual_seed(0)
    base = case.build()
    states: dict[str, list[dict[str, Tensor]]] = {}
    masks: dict[int, Tensor] = {}
    for kind in ("dense", "masked"):
        model = copy.deepcopy(base)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=DECAY)
        pruner = pa.Pruner(model, optimizer, case.recipe) if kind == "masked" else None
        for index in range(steps):
            inputs, targets = case.batches[index % len(case.batches)]
            optimizer.zero_grad(set_to_none=True)
            case.loss(model(inputs), targets).backward()
            optimizer.step()
        params = list(model.parameters())
        if pruner is not None:
            masks = {position: pruner.masks[name] for position, param in enumerate(params) for name, p in pruner.params.items() if p is param}
        states[kind] = [
            {"param": p.detach().clone(), "grad": p.grad.clone(), **{k: v.clone() for k, v in optimizer.state[p].items() if k != "step"}}
            for p in params
        ]
    states["denormal"] = [{k: v.clone() for k, v in entry.items()} for entry in states["masked"]]
    for position, keep in masks.items():
        for key in ("exp_avg", "exp_avg_sq"):
            states["denormal"][position][key][~keep] = 1e-40
    return states, masks


def operations() -> dict[str, Callable[[dict[str, Tensor]], object]]:
    """The CPU single-tensor AdamW update, operation by operation (torch 2.x, ``torch/optim/adam.py``)."""
    bias2 = (1 - BETA2**STEP) ** 0.5
    step_size = LR / (1 - BETA1**STEP)
    return {
        "param.mul_ (decay)": lambda s: s["param"].mul_(1 - LR * DECAY),
        "exp_avg.lerp_": lambda s: s["exp_avg"].lerp_(s["grad"], 1 - BETA1),
        "exp_avg_sq.mul_": lambda s: s["exp_avg_sq"].mul_(BETA2),
        "exp_avg_sq.addcmul_": lambda s: s["exp_avg_sq"].addcmul_(s["grad"], s["grad"], value=1 - BETA2),
        "exp_avg_sq.sqrt": lambda s: s.__setitem__("denom", s["exp_avg_sq"].sqrt()),
        "denom.div_ / add_(eps)": lambda s: s["denom"].div_(bias2).add_(EPS),
        "param.addcdiv_": lambda s: s["param"].addcdiv_(s["exp_avg"], s["denom"], value=-step_size),
    }


def whole_step(options: dict[str, bool]) -> Callable[[list[dict[str, Tensor]]], None]:
    """One ``torch.optim.AdamW(**options).step()`` over a state (its moments loaded at step ``STEP - 1``)."""

    def step(entries: list[dict[str, Tensor]]) -> None:
        params = [torch.nn.Parameter(entry["param"]) for entry in entries]
        optimizer = torch.optim.AdamW(params, lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=DECAY, **options)
        for param, entry in zip(params, entries):
            param.grad = entry["grad"]
            optimizer.state[param] = {"step": torch.tensor(float(STEP - 1)), "exp_avg": entry["exp_avg"], "exp_avg_sq": entry["exp_avg_sq"]}
        started = time.perf_counter()
        optimizer.step()
        entries[0]["seconds"] = torch.tensor(time.perf_counter() - started)

    return step


WHOLE = {"AdamW step, default (for-loop)": {}, "AdamW step, foreach=True": {"foreach": True}, "AdamW step, fused=True": {"fused": True}}


def time_operations(states: dict[str, list[dict[str, Tensor]]], rounds: int) -> dict[str, dict[str, float]]:
    """Median ms per operation and state kind, summed over the parameters; kinds interleaved per round, in rotating order."""
    ops = operations()
    times = {kind: {op: [] for op in [*ops, *WHOLE]} for kind in states}
    kinds = list(states)
    for round_ in range(rounds):
        for kind in kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]:
            work = [{k: v.clone() for k, v in entry.items()} for entry in states[kind]]  # the same inputs every round
            for op, run in ops.items():
                started = time.perf_counter()
                for entry in work:
                    run(entry)
                times[kind][op].append(time.perf_counter() - started)
            for name, options in WHOLE.items():
                work = [{k: v.clone() for k, v in entry.items()} for entry in states[kind]]
                whole_step(options)(work)
                times[kind][name].append(float(work[0]["seconds"]))
    return {kind: {op: 1e3 * statistics.median(values) for op, values in per_op.items()} for kind, per_op in times.items()}


def count_pruned_moments(state: list[dict[str, Tensor]], masks: dict[int, Tensor]) -> str:
    """How the pruned entries of the moments hold: exact zeros, denormals, normal values."""
    parts = []
    for key in ("exp_avg", "exp_avg_sq"):
        pruned = torch.cat([state[position][key][~keep] for position, keep in masks.items()])
        zeros = int((pruned == 0).sum())
        denormal = int(((pruned != 0) & (pruned.abs() < SMALLEST_NORMAL)).sum())
        parts.append(f"{key}: {pruned.numel()} pruned entries, {zeros} exact zeros, {denormal} denormal, {pruned.numel() - zeros - denormal} normal")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5, help="training steps before the states are taken")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(environment(args.threads))
    states, masks = trained_states(args.steps)
    print(f"after {args.steps} steps, masked run: {count_pruned_moments(states['masked'], masks)}")
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        ms = time_operations(states, args.rounds)
        print(f"\ntorch.set_flush_denormal({flush}); {args.rounds} rounds; median ms per operation over all {len(states['dense'])} parameters")
        print("| operation | " + " | ".join(ms) + " | masked - dense |")
        print("|---|" + "---|" * (len(ms) + 1))
        for op in operations():
            print(f"| {op} | " + " | ".join(f"{ms[kind][op]:.2f}" for kind in ms) + f" | {ms['masked'][op] - ms['dense'][op]:+.2f} |")
        totals = {kind: sum(per_op[op] for op in operations()) for kind, per_op in ms.items()}
        print("| sum of the operations | " + " | ".join(f"{total:.2f}" for total in totals.values()) + f" | {totals['masked'] - totals['dense']:+.2f} |")
        for name in WHOLE:
            print(f"| {name} | " + " | ".join(f"{ms[kind][name]:.2f}" for kind in ms) + f" | {ms['masked'][name] - ms['dense'][name]:+.2f} |")


if __name__ == "__main__":
    main()
