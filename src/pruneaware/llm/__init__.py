"""LLM-style one-shot pruning from calibration activations (Wanda, SparseGPT), the start for pruning-aware fine-tuning.

``wanda_prune`` and ``sparsegpt_prune`` prune the Linears of a transformer's blocks in place,
block by block, and return keep-masks; a ``Pruner`` with ``sparse_finetune`` continues from the
pruned model with those masks held. The ``wanda`` criterion for any recipe is ``pruneaware.criteria.wanda``.
"""

from pruneaware.llm.finetune import sparse_finetune
from pruneaware.llm.perplexity import perplexity, random_windows, spaced_windows
from pruneaware.llm.smollm import encode, load_smollm2
from pruneaware.llm.sparsegpt import sparsegpt_prune, sparsegpt_prune_weight
from pruneaware.llm.targets import SparsityTarget, parse_target
from pruneaware.llm.wanda import wanda_prune, wanda_scores
from pruneaware.methods import METHODS

METHODS.register("sparse_finetune")(sparse_finetune)

__all__ = [
    "SparsityTarget",
    "encode",
    "load_smollm2",
    "parse_target",
    "perplexity",
    "random_windows",
    "sparse_finetune",
    "sparsegpt_prune",
    "sparsegpt_prune_weight",
    "spaced_windows",
    "wanda_prune",
    "wanda_scores",
]
