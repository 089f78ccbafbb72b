"""Why hard movement pruning of MiniLM-L6 (distilled into its dense self) lands below a random ranking: coherent removal.

Movement's score ``-sum_t W * dL/dW`` is the first-order estimate of the loss change when a weight is
removed, signed. For a Linear, ``dL/dW_ij = sum delta_i x_j``; where an input ``x_j`` keeps one sign
(GELU outputs, LayerNorm outlier dimensions), the weights of row ``i`` that movement ranks lowest
are those whose contributions ``W_ij x_j`` share one sign, so removing them shifts output ``i`` by
their sum instead of the near-cancelling sum a random half gives. When the gradient is noise (the
student starts equal to its teacher), that shift is a large step in a random direction.

This measures it with the weights held fixed: movement scores over ``--batches`` distillation
batches (dropout on, as in training), then a one-shot mask per matrix at each ``--sparsity`` by each
ranking, and for each mask on held-out passages: the embedding cosine to the dense model (no
training), the output error of every pruned Linear relative to its output, and the coherence of
that error: ``|sum_j r_ij|^2 / sum_j r_ij^2`` over the removed terms ``r_ij = W_ij x_j`` of each
output, averaged (1 when their signs are independent, larger when they add up).

    python examples/movement_coherence.py [--batches 10] [--sparsity 0.5] [--heldout 256]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from pruneaware.text import distillation_loss, embed_batches, load_encoder, mean_cosine, shakespeare_passages, token_batches  # noqa: E402
from pruneaware.text.minilm import embed  # noqa: E402


def encoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear) and name.startswith("encoder.layer.")}


def movement_scores(student: nn.Module, batches: list, targets: list, seed: int) -> dict[str, Tensor]:
    """``-sum_t W * dL/dW`` over ``batches``, weights held fixed, dropout drawn under ``seed``."""
    linears = encoder_linears(student)
    scores = {name: torch.zeros_like(linear.weight) for name, linear in linears.items()}
    student.train()
    torch.manual_seed(seed)
    for batch, target in zip(batches, targets):
        student.zero_grad(set_to_none=True)
        distillation_loss(embed(student, batch), target).backward()
        for name, linear in linears.items():
            scores[name] -= linear.weight.detach() * linear.weight.grad
    student.zero_grad(set_to_none=True)
    return scores


def keep_top(scores: dict[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """Per matrix, True for the ``1 - sparsity`` highest scores (the paper's per-layer top-k)."""
    masks = {}
    for name, score in scores.items():
        flat = torch.zeros(score.numel(), dtype=torch.bool)
        flat[score.flatten().topk(score.numel() - round(sparsity * score.numel())).indices] = True
        masks[name] = flat.view_as(score)
    return masks


@torch.no_grad()
def inputs_of(model: nn.Module, batches: list) -> dict[str, Tensor]:
    """Every encoder Linear's inputs on ``batches`` (real tokens only), rows = tokens."""
    linears, seen, handles = encoder_linears(model), {}, []
    masks: list[Tensor] = []
    for name, linear in linears.items():
        handles.append(linear.register_forward_hook(lambda m, a, o, name=name: seen.setdefault(name, []).append(a[0][masks[-1]])))
    model.eval()
    for batch in batches:
        masks.append(batch["attention_mask"].bool())
        model(**batch)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(values) for name, values in seen.items()}


@torch.no_grad()
def output_error(dense: dict[str, nn.Linear], masks: dict[str, Tensor], inputs: dict[str, Tensor]) -> tuple[float, float]:
    """Mean over Linears of ||removed part of W x|| / ||W x|| on ``inputs``, and of the removed terms' coherence (1: independent signs)."""
    relative, coherence = [], []
    for name, linear in dense.items():
        x, removed_weight = inputs[name], linear.weight * ~masks[name]
        removed = x @ removed_weight.T
        relative.append(float(removed.norm() / (x @ linear.weight.T).norm()))
        coherence.append(float(removed.square().sum() / (x.square() @ removed_weight.square().T).sum()))
    return sum(relative) / len(relative), sum(coherence) / len(coherence)


@torch.no_grad()
def apply(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """``model`` with every mask applied to its encoder Linears."""
    for name, linear in encoder_linears(model).items():
        linear.weight *= masks[name]
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10, help="distillation batches of 16 the movement scores accumulate over")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--heldout", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher, tokenizer = load_encoder()
    train = token_batches(tokenizer, shakespeare_passages("train", 16 * args.batches, seed=args.seed), 16, 32)
    heldout = token_batches(tokenizer, shakespeare_passages("heldout", args.heldout, seed=args.seed), 32, 32)
    train_targets, heldout_targets = embed_batches(teacher, train), embed_batches(teacher, heldout)
    dense = encoder_linears(teacher)
    movement = movement_scores(copy.deepcopy(teacher), train, train_targets, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    rankings = {
        "magnitude": {name: linear.weight.detach().abs() for name, linear in dense.items()},
        "random": {name: torch.rand(linear.weight.shape, generator=generator) for name, linear in dense.items()},
        "movement": movement,
        "|movement| (unsigned Taylor)": {name: score.abs() for name, score in movement.items()},
    }
    evaluation = inputs_of(teacher, heldout)
    for sparsity in args.sparsity:
        for label, scores in rankings.items():
            masks = keep_top(scores, sparsity)
            relative, coherence = output_error(dense, masks, evaluation)
            cosine = mean_cosine(apply(copy.deepcopy(teacher), masks), heldout, heldout_targets)
            print(json.dumps({"ranking": label, "sparsity": sparsity, "cosine": cosine, "relative_output_error": relative, "coherence": coherence}), flush=True)


if __name__ == "__main__":
    main()
