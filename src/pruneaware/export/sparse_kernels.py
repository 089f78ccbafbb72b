"""CPU sparse matrix products for inference: a pruned weight matrix stored CSR, COO or BSR, times dense columns.

A kernel is a storage layout plus the torch call that multiplies it: ``mm`` (``torch.sparse.mm``,
bias added afterwards), ``addmm`` (``torch.addmm`` with the bias fused) or ``mv`` (``torch.mv``,
for a single column; more columns fall back to ``mm``). Which one is fastest depends on the
matrix and on the number of columns, so callers measure them rather than pick one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from pruneaware.errors import ConfigError

LAYOUTS = ("csr", "coo", "bsr")
CALLS = ("mm", "addmm", "mv")
FAMILIES = tuple(f"{layout}/{call}" for layout in LAYOUTS for call in CALLS)
DEFAULT_FAMILIES = ("csr/mm", "csr/addmm", "csr/mv", "coo/mm", "bsr/mm", "bsr/addmm")
"""What ``to_sparse`` tries by default: COO and BSR besides CSR, ``mv`` where one column is multiplied."""
BSR_BLOCKS = (8, 4, 2)
"""Square block sizes tried for BSR, largest first (the MKL sparse back-end takes square blocks only)."""
MIN_BLOCK_FILL = 0.5
"""BSR is a candidate only when at least this share of the values it stores are nonzero."""


@dataclass(frozen=True)
class Kernel:
    """A storage layout and the call that multiplies it; ``block`` is the BSR block size (0 otherwise)."""

    layout: str
    call: str
    block: int = 0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError("kernel layout", self.layout, LAYOUTS)
        if self.call not in CALLS:
            raise ConfigError("kernel call", self.call, CALLS)
        if (self.layout == "bsr") != (self.block > 0):
            raise ConfigError("kernel block", self.block, "a block size > 0 for bsr and 0 for csr and coo")

    @property
    def name(self) -> str:
        """'csr/mm', 'bsr4/addmm': how reports name the kernel."""
        layout = f"bsr{self.block}" if self.layout == "bsr" else self.layout
        return f"{layout}/{self.call}"

    @property
    def family(self) -> str:
        """'csr/mm', 'bsr/addmm': the name without the block size, as ``to_sparse(kernels=...)`` takes it."""
        return f"{self.layout}/{self.call}"


def compress(matrix: Tensor, kernel: Kernel) -> dict[str, Tensor]:
    """The parts of ``matrix`` (2-D, dense) in the kernel's layout, indices as int32 where the layout allows.

    int32 indices are what the MKL sparse routines behind torch's CSR and BSR products take;
    int64 ones are converted on every call.
    """
    matrix = matrix.detach()
    if kernel.layout == "coo":
        coo = matrix.to_sparse_coo().coalesce()
        return {"indices": coo.indices(), "values": coo.values()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        if kernel.layout == "bsr":
            compressed = matrix.to_sparse_bsr((kernel.block, kernel.block))
        else:
            compressed = matrix.to_sparse_csr()
    return {
        "crow_indices": compressed.crow_indices().to(torch.int32),
        "col_indices": compressed.col_indices().to(torch.int32),
        "values": compressed.values(),
    }


def assemble(parts: dict[str, Tensor], shape: tuple[int, int], kernel: Kernel) -> Tensor:
    """The sparse tensor made of ``parts`` (no copy), its indices checked: parts may come from a loaded state dict."""
    if kernel.layout == "coo":
        return torch.sparse_coo_tensor(
            parts["indices"], parts["values"], shape, is_coalesced=True, check_invariants=True
        )
    layout = torch.sparse_bsr if kernel.layout == "bsr" else torch.sparse_csr
    return torch.sparse_compressed_tensor(
        parts["crow_indices"], parts["col_indices"], parts["values"], shape, layout=layout, check_invariants=True
    )


def product(matrix: Tensor, columns: Tensor, bias: Tensor | None, kernel: Kernel) -> Tensor:
    """``matrix @ columns (+ bias per row)``: a (rows, columns) dense result from the sparse ``matrix``."""
    if kernel.call == "mv" and columns.shape[1] == 1:
        result = torch.mv(matrix, columns[:, 0]).unsqueeze(1)
    elif kernel.call == "addmm" and bias is not None:
        return torch.addmm(bias.unsqueeze(1), matrix, columns)
    else:
        result = torch.sparse.mm(matrix, columns)
    return result if bias is None else result.add_(bias.unsqueeze(1))


def block_size(matrix: Tensor) -> int:
    """The largest square block size that divides ``matrix`` and stores mostly nonzeros as BSR; 0 if none."""
    rows, cols = matrix.shape
    nonzero = matrix != 0
    count = int(nonzero.sum())
    for block in BSR_BLOCKS:
        if rows % block or cols % block or not count:
            continue
        blocks = nonzero.reshape(rows // block, block, cols // block, block).any(dim=(1, 3))
        if count >= MIN_BLOCK_FILL * int(blocks.sum()) * block * block:
            return block
    return 0


def candidates(matrix: Tensor, columns: int, families: tuple[str, ...] = DEFAULT_FAMILIES) -> list[Kernel]:
    """The kernels of ``families`` that fit ``matrix`` times ``columns`` dense columns: ``mv`` only for a
    single column, BSR only for a block-sparse matrix (at its largest fitting block size)."""
    block = block_size(matrix) if any(family.startswith("bsr") for family in families) else 0
    kernels = []
    for family in families:
        layout, _, call = family.partition("/")
        if (call == "mv" and columns != 1) or (layout == "bsr" and not block):
            continue
        kernels.append(Kernel(layout, call, block if layout == "bsr" else 0))
    return kernels
