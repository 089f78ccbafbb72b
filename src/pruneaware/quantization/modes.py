"""``.train()`` / ``.eval()`` on modules captured by ``torch.export``, which refuse both by default.

torchao's switch rewrites the graph (dropout, batch norm) and re-captures patterns on every call,
about a second each; graphs without such ops, and inference graphs, only need the flag.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from pruneaware.quantization import toolkit

MODE_DEPENDENT_OPS = ("dropout", "batch_norm")
"""Op names whose graph computation differs between training and inference."""


def allow_mode_switch(module: torch.fx.GraphModule) -> None:
    """Make ``.train()`` / ``.eval()`` work; the graph is rewritten only where it holds dropout or batch norm."""
    if has_mode_dependent_ops(module):
        toolkit.pt2e().allow_train_eval(module)
    else:
        switch_flags_only(module)


def switch_flags_only(module: torch.fx.GraphModule) -> None:
    """``.train()`` / ``.eval()`` set the ``training`` flags and leave the graph as it is (for inference graphs)."""
    module.train = types.MethodType(nn.Module.train, module)
    module.eval = types.MethodType(nn.Module.eval, module)


def has_mode_dependent_ops(module: torch.fx.GraphModule) -> bool:
    return any(
        node.op == "call_function" and any(name in str(node.target) for name in MODE_DEPENDENT_OPS) for node in module.graph.nodes
    )
