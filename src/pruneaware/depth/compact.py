"""Delete removed blocks from Hugging Face layer lists and update ``config``, so ``from_pretrained`` loads the model alone."""

from __future__ import annotations

from torch import nn

from pruneaware.depth.blocks import SkippedBlock

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
PER_LAYER_KEYS = ("layer_types",)


def compact(model: nn.Module) -> list[int]:
    """Drop SkippedBlocks from every ``nn.ModuleList`` of a model with a ``config``; returns the removed layer indices.

    Later layers are renumbered (their ``layer_idx``, read by a KV cache) and ``config`` gets the
    new layer count and per-layer lists (``layer_types``). Other models keep their SkippedBlocks,
    which ``pa.save``/``pa.load`` record and restore.
    """
    config = getattr(model, "config", None)
    if config is None:
        return []
    removed: list[int] = []
    for container in [m for m in model.modules() if isinstance(m, nn.ModuleList)]:
        skipped = [index for index, child in enumerate(container) if isinstance(child, SkippedBlock)]
        if not skipped:
            continue
        kept = [child for child in container if not isinstance(child, SkippedBlock)]
        for index in reversed(skipped):
            del container[index]
        for index, layer in enumerate(kept):
            for module in layer.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    module.layer_idx = index
        removed = skipped
        _update_config(config, len(kept), skipped)
    return removed


def _update_config(config: object, layers: int, skipped: list[int]) -> None:
    for key in LAYER_COUNT_KEYS:
        if hasattr(config, key):
            setattr(config, key, layers)
    for key in PER_LAYER_KEYS:
        values = getattr(config, key, None)
        if isinstance(values, list) and len(values) == layers + len(skipped):
            setattr(config, key, [v for i, v in enumerate(values) if i not in skipped])
