"""Find the blocks a model can lose (residual blocks, transformer layers) and remove them for real.

A removable block sits in an ``nn.Sequential`` or ``nn.ModuleList`` and returns a tensor shaped
like its input, so the block after it receives what it expects. Removal replaces the block by a
``SkippedBlock``, which returns its input and holds no weights: names of the other layers stay
stable during training, and ``compact`` deletes the placeholders of Hugging Face models at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, ScopeError
from pruneaware.structured.surgery import ParameterRemap


class SkippedBlock(nn.Module):
    """A removed block: returns its input (first positional argument, or ``hidden_states``) unchanged."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if args else kwargs["hidden_states"]


@dataclass
class Block:
    """One removable block: its name, shape, weight count and multiply-accumulates per example batch."""

    name: str
    shape: tuple[int, ...]
    params: int
    macs: int = 0
    parameters: list[nn.Parameter] = field(default_factory=list, repr=False)


def run(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on inputs as a loop would: a mapping as keywords, a tuple as positionals, else one argument."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def first_tensor(value: Any) -> Tensor | None:
    """The hidden states in a block's output or input: the tensor itself, or the first element of a tuple."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def block_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor | None:
    """A block's input hidden states (first positional argument, or ``hidden_states``)."""
    return first_tensor(args) if args else kwargs.get("hidden_states")


def _candidates(model: nn.Module) -> list[str]:
    """Children of Sequential/ModuleList containers holding at least two non-leaf modules of one class (not containers themselves)."""
    names = []
    for prefix, container in model.named_modules():
        if not isinstance(container, (nn.Sequential, nn.ModuleList)) or isinstance(container, SkippedBlock):
            continue
        children = [
            (name, child) for name, child in container.named_children()
            if any(True for _ in child.children()) and not isinstance(child, (nn.Sequential, nn.ModuleList))
        ]
        classes = [type(child) for _, child in children]
        names += [f"{prefix}.{name}" if prefix else name for name, child in children if classes.count(type(child)) >= 2]
    return names


def _macs(module: nn.Module, output: Tensor) -> int:
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = int(torch.tensor(module.kernel_size).prod())
        return output.numel() * kernel * module.in_channels // module.groups
    return 0


def trace_blocks(model: nn.Module, example_inputs: Any, names: Iterable[str]) -> tuple[dict[str, tuple[tuple[int, ...], tuple[int, ...]]], dict[str, int], int]:
    """Run ``example_inputs`` once: each named block's (input shape, output shape), its MACs, and the model's MACs."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    macs = {name: 0 for name in names}
    total = [0]
    handles = []

    def shape_hook(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            inp, out = block_input(args, kwargs), first_tensor(output)
            if inp is not None and out is not None:
                shapes[name] = (tuple(inp.shape), tuple(out.shape))
        return hook

    for name in macs:
        handles.append(modules[name].register_forward_hook(shape_hook(name), with_kwargs=True))
    for leaf_name, leaf in modules.items():
        if isinstance(leaf, (nn.Linear, nn.modules.conv._ConvNd)):
            owners = [name for name in macs if leaf_name.startswith(name + ".")]

            def count(module: nn.Module, args: Any, output: Tensor, owners: list[str] = owners) -> None:
                value = _macs(module, output)
                total[0] += value
                for owner in owners:
                    macs[owner] += value
            handles.append(leaf.register_forward_hook(count))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            run(model, example_inputs)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return shapes, macs, total[0]


def find_blocks(model: nn.Module, example_inputs: Any, patterns: Sequence[str] = ()) -> list[Block]:
    """The removable blocks: those ``patterns`` name (globs over module names; the outermost match), or every repeated block whose output shape is its input's.

    A named block whose shapes differ, that never runs, or a pattern matching nothing is a ConfigError naming it.
    """
    if example_inputs is None:
        raise ConfigError("example_inputs", None, "a batch of example inputs: depth pruning runs the model once to find blocks whose output shape is their input's")
    modules = dict(model.named_modules())
    if patterns:
        names: list[str] = []
        for pattern in patterns:
            hits = [name for name in modules if name and fnmatchcase(name, pattern) and not isinstance(modules[name], SkippedBlock)]
            if not hits:
                raise ScopeError(f"depth layers pattern {pattern!r} matches no module; module names look like: {_examples(_candidates(model) or list(modules))}")
            names += [name for name in hits if name not in names]
        names = [name for name in names if not any(name.startswith(other + ".") for other in names)]  # 'layers.*' names the layers, not their parts
    else:
        names = _candidates(model)
    shapes, macs, _ = trace_blocks(model, example_inputs, names)
    blocks = []
    for name in names:
        if name not in shapes:
            if patterns:
                raise ConfigError("stages.depth.layers", name, "a block the forward pass runs with a tensor input and output (this one never ran on the example inputs)")
            continue
        inp, out = shapes[name]
        if inp != out:
            if patterns:
                raise ConfigError("stages.depth.layers", name, f"a block whose output shape equals its input shape (it maps {inp} to {out}, so the next block could not take its input)")
            continue
        params = list(modules[name].parameters())
        blocks.append(Block(name, inp, sum(p.numel() for p in params), macs[name], params))
    if not blocks:
        raise ConfigError("stages.depth.layers", list(patterns) or None, "layers with matching input and output shapes; this model has no repeated block that could be removed (name them with layers: [...])")
    return blocks


def _examples(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:6]) + (" ..." if len(names) > 6 else "")


def remove_block(model: nn.Module, name: str) -> list[ParameterRemap]:
    """Replace the block ``name`` by a SkippedBlock; its parameters are announced as removed (``new=None``)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    block = parent.get_submodule(child)
    remaps = [ParameterRemap(param, None, ()) for param in block.parameters()]  # type: ignore[arg-type]
    setattr(parent, child, SkippedBlock())
    return remaps


def skipped_names(model: nn.Module) -> list[str]:
    """The names of the blocks removed so far."""
    return [name for name, module in model.named_modules() if isinstance(module, SkippedBlock)]


def skip_saved_blocks(model: nn.Module, module_types: Mapping[str, str]) -> None:
    """Remove from a freshly built model the blocks a saved spec records as SkippedBlock (``pa.load`` of a depth-pruned model)."""
    present = dict(model.named_modules())
    for name, type_name in module_types.items():
        if type_name == SkippedBlock.__qualname__ and name in present and not isinstance(present[name], SkippedBlock):
            remove_block(model, name)
