"""How much signal movement scores carry when MiniLM-L6 is distilled into its dense self, before and after damage.

Movement ranks weights by ``-sum_t W * dL/dW``. Two students start from the same weights and see the
same batches; only their dropout draws differ. If the scores measure something about the weights,
the two students' scores agree (correlation near 1); if they are noise, they do not (near 0). This
compares the dense start (the student equals its teacher: the expected gradient is zero) with a
start damaged by one-shot 50% magnitude pruning, where the distillation loss has a real gradient.

    python examples/movement_signal.py [--batches 10] [--seeds 0 1]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import pruneaware as pa  # noqa: E402
from pruneaware.text import ENCODER_SCOPE, distillation_loss, embed_batches, load_encoder, prune_without_training, shakespeare_passages, token_batches  # noqa: E402
from pruneaware.text.minilm import embed  # noqa: E402


def movement_scores(student: torch.nn.Module, batches: list, targets: list, seed: int) -> dict[str, torch.Tensor]:
    """``-sum_t W * dL/dW`` over ``batches`` for every encoder Linear weight, weights held fixed, dropout drawn under ``seed``."""
    weights = {name: module.weight for name, module in student.named_modules() if isinstance(module, torch.nn.Linear) and name.startswith("encoder.layer.")}
    scores = {name: torch.zeros_like(weight) for name, weight in weights.items()}
    student.train()
    torch.manual_seed(seed)
    for batch, target in zip(batches, targets):
        student.zero_grad(set_to_none=True)
        distillation_loss(embed(student, batch), target).backward()
        for name, weight in weights.items():
            scores[name] -= weight.detach() * weight.grad
    return scores


def agreement(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean over layers of the Pearson correlation of two score sets (nonzero weights only), and of the top-50% overlap."""
    correlations, overlaps = [], []
    for name, alive in weights.items():
        a, b = first[name][alive], second[name][alive]
        correlations.append(float(torch.corrcoef(torch.stack([a, b]))[0, 1]))
        k = a.numel() // 2
        top_a, top_b = torch.zeros_like(a, dtype=torch.bool), torch.zeros_like(b, dtype=torch.bool)
        top_a[a.topk(k).indices], top_b[b.topk(k).indices] = True, True
        overlaps.append(float((top_a & top_b).sum()) / k)
    return sum(correlations) / len(correlations), sum(overlaps) / len(overlaps)


def largest_dropped(scores: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> float:
    """Of each layer's 10% largest-magnitude weights, the fraction a top-50% movement ranking would prune (magnitude: 0)."""
    fractions = []
    for name, weight in weights.items():
        score, size = scores[name].flatten(), weight.abs().flatten()
        largest = size.topk(size.numel() // 10).indices
        bottom_half = torch.ones_like(score, dtype=torch.bool)
        bottom_half[score.topk(score.numel() // 2).indices] = False
        fractions.append(float(bottom_half[largest].float().mean()))
    return sum(fractions) / len(fractions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10, help="batches accumulated (the ramp's first update comes after 10 steps)")
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1], help="the two dropout seeds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher, tokenizer = load_encoder()
    batches = token_batches(tokenizer, shakespeare_passages("train", 16 * args.batches, seed=0), 16, 32)
    targets = embed_batches(teacher, batches)
    one_shot = {"name": "one-shot", "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}, "granularity": {"type": "element", "scope": "layer"}}, "scope": ENCODER_SCOPE}
    damaged = copy.deepcopy(teacher)
    prune_without_training(damaged, pa.Recipe.from_dict(one_shot))
    table = Table(title=f"agreement of movement scores between dropout seeds {args.seeds} ({args.batches} batches of 16)")
    for column in ("start", "loss at start", "score correlation", "top-50% overlap (0.5 = chance)", "largest 10% ranked in the bottom half"):
        table.add_column(column)
    for label, start in (("dense (student = teacher)", teacher), ("one-shot magnitude 50%", damaged)):
        scores = [movement_scores(copy.deepcopy(start), batches, targets, seed) for seed in args.seeds]
        alive = {name: module.weight.detach() != 0 for name, module in start.named_modules() if name in scores[0]}
        with torch.no_grad():
            start.eval()
            loss = sum(float(distillation_loss(embed(start, b), t)) for b, t in zip(batches, targets)) / len(batches)
        correlation, overlap = agreement(*scores, alive)
        weights = {name: module.weight.detach() for name, module in start.named_modules() if name in scores[0]}
        table.add_row(label, f"{loss:.4f}", f"{correlation:.3f}", f"{overlap:.3f}", f"{largest_dropped(scores[0], weights):.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
