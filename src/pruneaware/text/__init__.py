"""Text encoders: load a sentence encoder offline, embed, and distill a pruned copy into the dense model."""

from pruneaware.text.distill import (
    distill,
    distillation_loss,
    embed_batches,
    mean_cosine,
    prune_without_training,
    shakespeare_passages,
    token_batches,
)
from pruneaware.text.minilm import ENCODER_SCOPE, embed, load_encoder, mean_pool, tokenize

__all__ = [
    "ENCODER_SCOPE",
    "distill",
    "distillation_loss",
    "embed",
    "embed_batches",
    "load_encoder",
    "mean_cosine",
    "mean_pool",
    "prune_without_training",
    "shakespeare_passages",
    "token_batches",
]
