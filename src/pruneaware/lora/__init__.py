"""Sparsity-preserving LoRA: peft adapters on a pruned model whose merge keeps the base's zeros (and 2:4 patterns).

Needs the ``lora`` extra (``pip install pruneaware[lora]``). See docs/lora.md.
"""

from pruneaware.lora.sparse import MODES, SparseLoRA, lora_layers

__all__ = ["MODES", "SparseLoRA", "lora_layers"]
