"""SparseGPT (Frantar & Alistarh 2023): prune column by column with optimal-brain-surgeon updates of the remaining weights.

With H = 2 X X^T the layer-wise Hessian of ||W X - W' X||^2, removing weight w_ij is compensated by
updating the not-yet-processed weights of its row along row j of the Cholesky factor of H^-1.
Masks are chosen per block of columns by w^2 / [H^-1]_jj^2 (adaptive mask selection), or per N:M group.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, StateError
from pruneaware.llm.sequential import prune_blocks
from pruneaware.llm.statistics import InputStatistics
from pruneaware.llm.targets import SparsityTarget, parse_target


def inverse_hessian_factor(hessian: Tensor, damping: float) -> tuple[Tensor, Tensor]:
    """The upper Cholesky factor U of H^-1 (H^-1 = U^T U), after dampening; and which input features were dead.

    Dead features (H_jj = 0: the input is always zero) get H_jj = 1 so H is invertible; their
    weights do nothing and are set to zero by the caller. ``damping`` * mean(diag H) is added to the
    diagonal, which keeps the factorization stable when inputs are nearly collinear.
    """
    h = hessian.detach().double().clone()
    diagonal = h.diagonal()
    dead = diagonal == 0
    diagonal[dead] = 1.0
    diagonal.add_(damping * diagonal.mean())
    factor, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        raise StateError(f"the layer Hessian is not positive definite even with damping {damping}; raise damping (e.g. 0.1)")
    inverse = torch.cholesky_inverse(factor)
    return torch.linalg.cholesky(inverse, upper=True), dead


def check_solver_options(block_size: int, damping: float) -> None:
    """Reject a non-positive column block or a negative (or NaN) damping before any work is done."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError("block_size", block_size, "a positive whole number of columns, e.g. 128")
    if not damping >= 0:
        raise ConfigError("damping", damping, "a fraction of the mean Hessian diagonal >= 0, e.g. 0.01")


@torch.no_grad()
def sparsegpt_prune_weight(
    weight: Tensor, hessian: Tensor, target: SparsityTarget, *, block_size: int = 128, damping: float = 0.01
) -> Tensor:
    """Prune ``weight`` (out, in) in place to ``target`` with error compensation; returns the keep-mask.

    Unstructured: each block of columns removes its share of the layer's target, so the layer's
    sparsity is exact while rows differ. N:M: the M - N lowest of each group in each row.
    """
    check_solver_options(block_size, damping)
    rows, columns = weight.shape
    upper, dead = inverse_hessian_factor(hessian, damping)
    w = weight.detach().double().clone()
    w[:, dead] = 0.0
    if target.nm is not None:
        block_size = max(block_size - block_size % target.nm.m, target.nm.m)
    keep = torch.ones_like(w, dtype=torch.bool)
    removed = 0
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block, factor = w[:, start:end].clone(), upper[start:end, start:end]
        diagonal = factor.diagonal()
        prune = torch.zeros_like(block, dtype=torch.bool)
        if target.nm is None:
            quota = round(target.sparsity * rows * end) - removed  # cumulative rounding: the layer total is exact
            saliency = (block.square() / diagonal.square()).flatten()
            prune.view(-1)[torch.topk(saliency, quota, largest=False, sorted=False).indices] = True
            removed += quota
        errors = torch.zeros_like(block)
        with _one_thread():
            _solve_block(block, prune, errors, factor, diagonal, target)
        w[:, start:end] = block
        w[:, end:] -= errors @ upper[start:end, end:]
        keep[:, start:end] = ~prune
    weight.copy_(w.to(weight.dtype))
    return keep


@contextmanager
def _one_thread() -> Iterator[None]:
    """The column-by-column updates are many tiny ops: on one thread they never wait at a barrier for a descheduled sibling."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _solve_block(block: Tensor, prune: Tensor, errors: Tensor, factor: Tensor, diagonal: Tensor, target: SparsityTarget) -> None:
    """Prune the columns of one block in order, each removal's error pushed onto the block's later columns (in place)."""
    for j in range(block.shape[1]):
        if target.nm is not None and j % target.nm.m == 0:
            group = block[:, j : j + target.nm.m].square() / diagonal[j : j + target.nm.m].square()
            lowest = torch.topk(group, target.nm.m - target.nm.n, dim=1, largest=False, sorted=False).indices
            prune[:, j : j + target.nm.m].scatter_(1, lowest, True)
        column = block[:, j]
        error = torch.where(prune[:, j], column, 0.0) / diagonal[j]
        block[:, j:] -= error[:, None] * factor[j, j:][None, :]
        block[:, j] = torch.where(prune[:, j], 0.0, block[:, j])
        errors[:, j] = error


def sparsegpt_prune(
    model: nn.Module,
    calibration: Iterable[Any],
    sparsity: float | str,
    *,
    blocks: str | None = None,
    block_size: int = 128,
    damping: float = 0.01,
) -> dict[str, Tensor]:
    """One-shot SparseGPT on every Linear of the transformer blocks, block by block; returns keep-masks by parameter name.

    ``sparsity`` is a fraction or ``"N:M"``; ``damping`` is the fraction of the mean Hessian
    diagonal added before inversion (1% as in the paper).
    """
    target = parse_target(sparsity)
    check_solver_options(block_size, damping)

    def prune_layer(name: str, linear: nn.Linear, statistics: InputStatistics) -> Tensor:
        return sparsegpt_prune_weight(linear.weight, statistics.hessian(), target, block_size=block_size, damping=damping)

    return prune_blocks(model, calibration, target, prune_layer, hessian=True, blocks=blocks)
