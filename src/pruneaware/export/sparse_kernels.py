"""CPU sparse matrix products for inference: a pruned weight matrix stored CSR, COO or BSR, times dense columns.

A kernel is a storage layout plus the torch call that multiplies it: ``mm`` (``torch.sparse.mm``,
bias added afterwards), ``addmm`` (``torch.addmm`` with the bias fused) or ``mv`` (``torch.mv``,
for a single column; more columns fall back to ``mm``). ``csr-split`` is CSR cut into column
slices whose products are accumulated, so the part of the dense operand being read fits in cache.
Which one is fastest depends on the matrix and on the number of columns, so callers measure them
rather than pick one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from pruneaware.core.errors import ConfigError

LAYOUTS = ("csr", "csr-split", "coo", "bsr")
CALLS = ("mm", "addmm", "mv")
FAMILIES = tuple(f"{layout}/{call}" for layout in LAYOUTS for call in CALLS)
DEFAULT_FAMILIES = ("csr/mm", "csr/addmm", "csr/mv", "csr-split/addmm", "coo/mm", "bsr/mm", "bsr/addmm")
"""What ``to_sparse`` tries by default: COO and BSR besides CSR, ``mv`` where one column is multiplied."""
BSR_BLOCKS = (8, 4, 2)
"""Square block sizes tried for BSR, largest first (the MKL sparse back-end takes square blocks only)."""
MIN_BLOCK_FILL = 0.5
"""BSR is a candidate only when at least this share of the values it stores are nonzero."""
SPLIT_BYTES = 192 * 1024
"""Column-split CSR cuts the input dimension so each slice of the dense operand is at most this large (fits L2)."""


@dataclass(frozen=True)
class Kernel:
    """A storage layout and the call that multiplies it.

    ``block`` is the BSR block size (0 for other layouts); ``splits`` the number of column slices
    of ``csr-split`` (1 for other layouts), each multiplied with its slice of the dense operand and
    accumulated, so the slice being read stays in cache.
    """

    layout: str
    call: str
    block: int = 0
    splits: int = 1

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError("kernel layout", self.layout, LAYOUTS)
        if self.call not in CALLS:
            raise ConfigError("kernel call", self.call, CALLS)
        if (self.layout == "bsr") != (self.block > 0):
            raise ConfigError("kernel block", self.block, "a block size > 0 for bsr and 0 otherwise")
        if (self.layout == "csr-split") != (self.splits > 1):
            raise ConfigError("kernel splits", self.splits, "2 or more for csr-split and 1 otherwise")

    @property
    def name(self) -> str:
        """'csr/mm', 'bsr4/addmm', 'csr-split4/addmm': how reports name the kernel."""
        size = self.block if self.layout == "bsr" else self.splits if self.layout == "csr-split" else ""
        return f"{self.layout}{size}/{self.call}"

    @property
    def family(self) -> str:
        """'csr/mm', 'bsr/addmm': the name without block size or split count, as ``to_sparse(kernels=...)`` takes it."""
        return f"{self.layout}/{self.call}"


def slice_widths(width: int, splits: int) -> list[int]:
    """Widths of ``splits`` near-equal column slices of a ``width``-column matrix."""
    step = -(-width // splits)
    return [min(step, width - start) for start in range(0, width, step)]


def compress(matrix: Tensor, kernel: Kernel) -> dict[str, Tensor]:
    """The parts of ``matrix`` (2-D, dense) in the kernel's layout, indices as int32 where the layout allows.

    int32 indices are what the MKL sparse routines behind torch's CSR and BSR products take;
    int64 ones are converted on every call. ``csr-split`` stacks one row of ``crow_indices`` per
    column slice and concatenates the slices' column indices and values.
    """
    matrix = matrix.detach()
    if kernel.layout == "coo":
        coo = matrix.to_sparse_coo().coalesce()
        return {"indices": coo.indices(), "values": coo.values()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        if kernel.layout == "bsr":
            slices = [matrix.to_sparse_bsr((kernel.block, kernel.block))]
        else:
            slices = [part.to_sparse_csr() for part in matrix.split(slice_widths(matrix.shape[1], kernel.splits), dim=1)]
    crow = torch.stack([part.crow_indices() for part in slices]).to(torch.int32)
    return {
        "crow_indices": crow if kernel.layout == "csr-split" else crow[0],
        "col_indices": torch.cat([part.col_indices() for part in slices]).to(torch.int32),
        "values": torch.cat([part.values() for part in slices]),
    }


def assemble(parts: dict[str, Tensor], shape: tuple[int, int], kernel: Kernel) -> tuple[Tensor, ...]:
    """The sparse column slices made of ``parts`` (one unless ``csr-split``; no copy of the values), indices
    checked: parts may come from a loaded state dict."""
    if kernel.layout == "coo":
        return (torch.sparse_coo_tensor(parts["indices"], parts["values"], shape, is_coalesced=True, check_invariants=True),)
    layout = torch.sparse_bsr if kernel.layout == "bsr" else torch.sparse_csr
    crows = parts["crow_indices"].reshape(-1, parts["crow_indices"].shape[-1])
    slices, start = [], 0
    for crow, width in zip(crows, slice_widths(shape[1], kernel.splits)):
        count = int(crow[-1])
        columns, values = parts["col_indices"][start:start + count], parts["values"][start:start + count]
        slices.append(
            torch.sparse_compressed_tensor(crow, columns, values, (shape[0], width), layout=layout, check_invariants=True)
        )
        start += count
    return tuple(slices)


def product(slices: tuple[Tensor, ...], columns: Tensor, bias: Tensor | None, kernel: Kernel) -> Tensor:
    """``matrix @ columns (+ bias per row)``: a (rows, columns) dense result from the sparse column slices."""
    first, *rest = slices
    operands = columns.split([part.shape[1] for part in slices]) if rest else (columns,)
    if kernel.call == "mv" and columns.shape[1] == 1:
        result = torch.mv(first, operands[0][:, 0]).unsqueeze(1)
    elif kernel.call == "addmm" and bias is not None:
        result = torch.addmm(bias.unsqueeze(1), first, operands[0])
        bias = None
    else:
        result = torch.sparse.mm(first, operands[0])
    for part, operand in zip(rest, operands[1:]):
        result.addmm_(part, operand)
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


def split_count(matrix: Tensor, columns: int) -> int:
    """Column slices that keep each slice of a (inputs, ``columns``) dense operand within ``SPLIT_BYTES``."""
    operand_bytes = matrix.shape[1] * columns * matrix.element_size()
    return min(-(-operand_bytes // SPLIT_BYTES), matrix.shape[1])


def candidates(matrix: Tensor, columns: int, families: tuple[str, ...] = DEFAULT_FAMILIES) -> list[Kernel]:
    """The kernels of ``families`` that fit ``matrix`` times ``columns`` dense columns: ``mv`` only for a
    single column, BSR only for a block-sparse matrix (at its largest fitting block size), ``csr-split``
    only where the dense operand outgrows ``SPLIT_BYTES``."""
    block = block_size(matrix) if any(family.startswith("bsr") for family in families) else 0
    splits = split_count(matrix, columns)
    kernels = []
    for family in families:
        layout, _, call = family.partition("/")
        if (call == "mv" and columns != 1) or (layout == "bsr" and not block):
            continue
        if layout == "csr-split" and (splits < 2 or columns == 1):
            continue
        kernels.append(Kernel(layout, call, block if layout == "bsr" else 0, splits if layout == "csr-split" else 1))
    return kernels
