"""Layer-wise density allocation: how one sparsity target is shared out among layers (Erdős–Rényi).

Uniform allocation gives every layer the same sparsity; Erdős–Rényi gives a layer density
proportional to ``sum(dims) / prod(dims)``, so large layers are pruned harder than small ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def erdos_renyi_densities(shapes: Mapping[str, Sequence[int]], density: float, kernel: bool = True) -> dict[str, float]:
    """Per-layer densities ``eps * sum(dims) / prod(dims)``, with ``eps`` solved so the overall density is ``density``.

    Erdős–Rényi (Mocanu et al. 2018) takes ``dims`` = (outputs, inputs); the Kernel variant (ERK,
    Evci et al. 2020) adds the kernel sizes of convolutions, so both agree on Linear layers. A layer
    whose density would exceed 1 stays dense and ``eps`` is solved again over the others.
    """
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    dims = {name: tuple(shape) if kernel else tuple(shape[:2]) for name, shape in shapes.items()}
    raw = {name: sum(dims[name]) / math.prod(dims[name]) for name in shapes}
    budget = density * sum(sizes.values())
    dense: set[str] = set()
    scale = 0.0
    while len(dense) < len(shapes):
        free = [name for name in shapes if name not in dense]
        scale = (budget - sum(sizes[name] for name in dense)) / sum(raw[name] * sizes[name] for name in free)
        saturated = {name for name in free if scale * raw[name] >= 1.0}
        if not saturated:
            break
        dense |= saturated
    return {name: 1.0 if name in dense else scale * raw[name] for name in shapes}
