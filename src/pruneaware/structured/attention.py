"""Attention heads as pruning units: find attention modules, tell Torch-Pruning their heads, keep them consistent.

Torch-Pruning removes whole heads (or the same dimensions from every head) when it knows each
projection's head count (``num_heads``, keyed by the q/k/v Linears or one fused qkv Linear). It
does not know the attributes an attention module reshapes with, and ranks heads globally without
a per-layer cap. After every removal (and replay) the new head count and head size are written
back into each module and into the ranker's bookkeeping (which a replay or a soft-phase ranking
leaves stale), and one removal never takes a layer below ``1 - max_layer_ratio`` of its heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch_pruning._helpers import to_plain_idxs

from pruneaware.core.errors import TraceError
from pruneaware.structured.convert import is_transposed_conv1d

CONVERT_HINT = "call pruneaware.structured.convert_for_pruning(model) before building the optimizer (outputs are unchanged)"
HEAD_COUNT_ATTRIBUTES = ("num_heads", "num_attention_heads", "n_head", "n_heads")


@dataclass(frozen=True)
class AttentionLayout:
    """Where one family of attention modules keeps its projections and its head sizes."""

    family: str
    projections: tuple[str, ...]
    """Child Linears: q, k and v, or one fused qkv whose outputs are [q | k | v]."""
    heads: str
    """Attribute holding the number of heads."""
    head_dim: str
    """Attribute holding the size of one head (what the forward reshapes with)."""
    width: str | None = None
    """Attribute holding heads * head_dim, if the module keeps one."""

    @property
    def fused(self) -> bool:
        return len(self.projections) == 1

    def matches(self, module: nn.Module) -> bool:
        """Whether ``module`` has this layout's projections and integer head attributes."""
        names = (self.heads, self.head_dim) + ((self.width,) if self.width else ())
        has_children = all(isinstance(getattr(module, p, None), nn.Module) for p in self.projections)
        return has_children and all(isinstance(getattr(module, a, None), int) for a in names)


LAYOUTS = (
    AttentionLayout(
        "Hugging Face BERT", ("query", "key", "value"), "num_attention_heads", "attention_head_size", "all_head_size"
    ),
    AttentionLayout("Hugging Face GPT-2", ("c_attn",), "num_heads", "head_dim", "split_size"),
    AttentionLayout("PrunableMultiheadAttention", ("q_proj", "k_proj", "v_proj"), "num_heads", "head_dim"),
)


@dataclass(frozen=True)
class WidthMirror:
    """An attribute a model reshapes with that copies a layer's width (rewritten after every removal)."""

    model_type: str
    attribute: str
    layer: str
    field: str


WIDTH_MIRRORS = (WidthMirror("VisionTransformer", "hidden_dim", "conv_proj", "out_channels"),)  # torchvision ViT


@dataclass(frozen=True)
class FoundAttention:
    """One attention module of the model as built: its name, layout and original head count and size."""

    name: str
    layout: AttentionLayout
    num_heads: int
    head_dim: int


def find_attention(model: nn.Module, ignored: Sequence[nn.Module] = ()) -> list[FoundAttention]:
    """The attention modules of ``model`` outside ``ignored``; unsupported layouts raise TraceError naming the fix."""
    skipped = {id(sub) for module in ignored for sub in module.modules()}
    found: list[FoundAttention] = []
    claimed: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in skipped:
            continue
        if isinstance(module, nn.MultiheadAttention):
            raise TraceError(f"{name!r} is an nn.MultiheadAttention, whose heads Torch-Pruning cannot remove; {CONVERT_HINT}")
        if is_transposed_conv1d(module):
            raise _conv1d_error(name)
        layout = next((layout for layout in LAYOUTS if layout.matches(module)), None)
        if layout is not None:
            found.append(_checked(name, module, layout))
            claimed.update(id(sub) for sub in module.modules())
    for name, module in model.named_modules():
        if id(module) not in skipped and _looks_like_attention(module) and not _contains(module, claimed):
            families = ", ".join(layout.family for layout in LAYOUTS)
            raise TraceError(
                f"cannot tell how {name!r} ({type(module).__name__}) splits its projections into heads (supported: "
                f"{families}; nn.MultiheadAttention after convert_for_pruning). List it under 'ignore' in the "
                "structured section to leave its heads whole"
            )
    return found


def _checked(name: str, module: nn.Module, layout: AttentionLayout) -> FoundAttention:
    heads, head_dim = getattr(module, layout.heads), getattr(module, layout.head_dim)
    factor = 3 if layout.fused else 1
    for projection in layout.projections:
        linear = getattr(module, projection)
        if is_transposed_conv1d(linear):
            raise _conv1d_error(f"{name}.{projection}")
        if not isinstance(linear, nn.Linear) or linear.out_features != factor * heads * head_dim:
            raise TraceError(
                f"attention {name!r} ({layout.family} layout): '{projection}' is not a Linear with {factor} x {heads} heads x "
                f"{head_dim} outputs (grouped-query or cross attention is not supported); list it under 'ignore'"
            )
    return FoundAttention(name, layout, heads, head_dim)


def _conv1d_error(name: str) -> TraceError:
    return TraceError(f"{name!r} is a Hugging Face Conv1D (a transposed Linear), unknown to Torch-Pruning; {CONVERT_HINT}")


def _looks_like_attention(module: nn.Module) -> bool:
    """A module holding a head count and its own Linear projections."""
    has_heads = any(isinstance(getattr(module, a, None), int) for a in HEAD_COUNT_ATTRIBUTES)
    return has_heads and any(isinstance(child, nn.Linear) for child in module.children())


def _contains(module: nn.Module, claimed: set[int]) -> bool:
    return any(id(sub) in claimed for sub in module.modules())


class AttentionHeads:
    """The model's attention modules as Torch-Pruning sees them, kept consistent through removals.

    ``whole_heads=True`` removes entire heads (the head size stays); ``False`` removes the same
    dimensions from every head (the head count stays). The ranker's per-step ratios apply to heads
    (ranked among heads) as to channels; no layer keeps fewer than ``1 - max_layer_ratio`` of its
    heads (or head dimensions), and never fewer than one.
    """

    def __init__(
        self, model: nn.Module, ignored: Sequence[nn.Module] = (), *, whole_heads: bool = True, max_layer_ratio: float = 0.9
    ):
        self.model = model
        self.found = find_attention(model, ignored)
        self._modules = {found.name: model.get_submodule(found.name) for found in self.found}
        self.whole_heads = whole_heads
        self._floor = {
            found.name: max(1, math.ceil((found.num_heads if whole_heads else found.head_dim) * (1 - max_layer_ratio)))
            for found in self.found
        }

    def pruner_options(self) -> dict[str, Any]:
        """Keyword arguments for ``tp.pruner.BasePruner`` (a fresh ``num_heads`` dict: the ranker mutates it)."""
        return {
            "num_heads": self._head_counts(self.model),
            "prune_num_heads": self.whole_heads and bool(self.found),
            "prune_head_dims": not self.whole_heads,
        }

    def _head_counts(self, model: nn.Module) -> dict[nn.Module, int]:
        modules = dict(model.named_modules())
        counts: dict[nn.Module, int] = {}
        for found in self.found:
            module = modules[found.name]
            for projection in found.layout.projections:
                counts[getattr(module, projection)] = getattr(module, found.layout.heads)
        return counts

    def within_cap(self, group: Any, ranker: Any) -> Any:
        """The group, with fewer heads (or head dimensions) removed if its layer would fall below its floor.

        The floor is ``1 - max_layer_ratio`` of the layer as built and, with per-layer allocation, the
        schedule's fraction of it. ``None`` passes through (a group already dropped); groups of other
        layers are returned as they are.
        """
        if group is None:
            return None
        found = self._attention_of(group, ranker.DG)
        if found is None:
            return group
        module = self._modules[found.name]
        heads, head_dim = getattr(module, found.layout.heads), getattr(module, found.layout.head_dim)
        dep, indices = group[0]
        root_indices = [int(i) for i in to_plain_idxs(indices)]
        unit_of = (lambda i: i // head_dim) if self.whole_heads else (lambda i: i % head_dim)  # noqa: E731
        removed = sorted({unit_of(i) for i in root_indices})
        floor = self._floor[found.name]
        if self.whole_heads and not ranker.global_pruning:  # its per-layer ratio counts the heads left, not those built
            ratio = ranker.per_step_head_pruning_ratio[ranker.current_step]
            floor = max(floor, found.num_heads - math.ceil(ratio * found.num_heads))
        allowed = max((heads if self.whole_heads else head_dim) - floor, 0)
        if len(removed) <= allowed:
            return group
        if allowed == 0:
            return None
        graph, root, handler = ranker.DG, dep.target.module, dep.handler
        importance = ranker.estimate_importance(graph.get_pruning_group(root, handler, list(range(heads * head_dim))))
        if importance is not None and len(importance) == heads * head_dim:
            per_unit = importance.view(heads, head_dim).mean(dim=1 if self.whole_heads else 0)
            removed.sort(key=lambda unit: float(per_unit[unit]))
        kept_removed = set(removed[:allowed])
        return graph.get_pruning_group(root, handler, [i for i in root_indices if unit_of(i) in kept_removed])

    def _attention_of(self, group: Any, graph: Any) -> FoundAttention | None:
        """The attention module whose first projection loses outputs in ``group``, if any."""
        targets = {id(dep.target.module) for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)}
        for found in self.found:
            if id(getattr(self._modules[found.name], found.layout.projections[0])) in targets:
                return found
        return None

    def sync(self, model: nn.Module | None = None, ranker: Any = None) -> None:
        """Write each attention module's head count and size (and mirrored model widths) from the layers' current widths.

        ``model`` defaults to the pruned model (pass a pruned copy to fix that copy); with ``ranker``,
        its head bookkeeping is reset to the real counts too.
        """
        model = self.model if model is None else model
        modules = dict(model.named_modules())
        for found in self.found:
            module, layout = modules[found.name], found.layout
            outputs = sorted({getattr(module, p).out_features for p in layout.projections})
            width = outputs[0] // (3 if layout.fused else 1)
            heads, head_dim = getattr(module, layout.heads), getattr(module, layout.head_dim)
            if self.whole_heads:
                heads = width // head_dim
            else:
                head_dim = width // heads
            if len(outputs) > 1 or width == 0 or heads * head_dim != width:
                raise TraceError(
                    f"attention {found.name!r} was cut inside its heads (projection outputs {outputs} for heads of "
                    f"{head_dim}); the model is inconsistent, please report this with the model"
                )
            setattr(module, layout.heads, heads)
            setattr(module, layout.head_dim, head_dim)
            if layout.width:
                setattr(module, layout.width, heads * head_dim)
        for module in model.modules():
            for mirror in WIDTH_MIRRORS:
                if type(module).__name__ == mirror.model_type and hasattr(module, mirror.layer):
                    setattr(module, mirror.attribute, getattr(getattr(module, mirror.layer), mirror.field))
        if ranker is not None:
            counts = self._head_counts(model)
            ranker.num_heads.update(counts)
            ranker.out_channel_groups.update(counts)

