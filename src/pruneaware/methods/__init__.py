"""Pruning methods: each a small function returning a Recipe composed from the leaves."""

from pruneaware.methods.gmp import gradual_magnitude
from pruneaware.methods.l1 import l1_sparsity
from pruneaware.methods.one_shot import one_shot

__all__ = ["gradual_magnitude", "l1_sparsity", "one_shot"]
