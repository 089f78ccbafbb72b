"""The method that continues from a one-shot-pruned model: the masks it came with are kept while it fine-tunes (``sparse_finetune`` in ``pa.methods.METHODS``)."""

from __future__ import annotations

from collections.abc import Sequence

from pruneaware.llm.targets import parse_target
from pruneaware.recipe import Recipe


def sparse_finetune(sparsity: float | str, *, include: Sequence[str] = ("model.layers.*",), name: str = "llm-sparse-finetune") -> Recipe:
    """Fine-tune a model already pruned to ``sparsity`` (a fraction or ``"N:M"``) with its zeros held.

    The Pruner's masks start from the model's nonzeros and a one-shot schedule at step 0 asks for
    the sparsity the model already has, so nothing more is removed: the recipe only enforces the
    one-shot masks (gradients and weights zeroed each step). ``include`` selects the Linears of
    the transformer blocks (embeddings and the output head stay dense).
    """
    target = parse_target(sparsity)
    granularity = {"type": "nm", "n": target.nm.n, "m": target.nm.m} if target.nm else {"type": "element", "scope": "layer"}
    return Recipe.from_dict(
        {
            "name": name,
            "pruning": {
                "criterion": "magnitude",
                "granularity": granularity,
                "schedule": {"type": "one_shot", "sparsity": target.sparsity, "at": 0, "unit": "step"},
            },
            "scope": {"modules": ["Linear"], "include": list(include), "skip_last": False},
        }
    )
