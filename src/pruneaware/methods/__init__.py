"""Pruning methods: each a small function returning a Recipe composed from the leaves (``pa.methods.<name>``), listed by name in ``METHODS``."""

from pruneaware.core.registry import Registry

from pruneaware.methods.at_init import grasp, snip, synflow
from pruneaware.methods.dns import dynamic_surgery
from pruneaware.methods.fisher import fisher_pruning
from pruneaware.methods.gmp import gradual_magnitude
from pruneaware.methods.imp import lottery_ticket
from pruneaware.methods.l0 import l0_sparsity
from pruneaware.methods.l1 import l1_sparsity
from pruneaware.methods.movement import movement_pruning, soft_movement, topk_movement
from pruneaware.methods.one_shot import one_shot
from pruneaware.methods.rigl import rigl
from pruneaware.methods.sr_ste import sr_ste
from pruneaware.recipe import Recipe

METHODS: Registry[Recipe] = Registry("method")
"""Method builders by their function name: ``METHODS.build("rigl", 0.9)`` is ``rigl(0.9)``."""
for _builder in (
    dynamic_surgery,
    fisher_pruning,
    gradual_magnitude,
    grasp,
    l0_sparsity,
    l1_sparsity,
    lottery_ticket,
    movement_pruning,
    one_shot,
    rigl,
    snip,
    soft_movement,
    sr_ste,
    synflow,
    topk_movement,
):
    METHODS.register(_builder.__name__)(_builder)

__all__ = [  # the builders (METHODS lists them by name)
    "dynamic_surgery",
    "fisher_pruning",
    "gradual_magnitude",
    "grasp",
    "l0_sparsity",
    "l1_sparsity",
    "lottery_ticket",
    "movement_pruning",
    "one_shot",
    "rigl",
    "snip",
    "soft_movement",
    "sr_ste",
    "synflow",
    "topk_movement",
]
