"""Resize a freshly built dense model to a saved spec: module attributes first, then tensor shapes."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from pruneaware.depth.blocks import skip_saved_blocks
from pruneaware.core.errors import StateError
from pruneaware.export.spec import Attribute, ModelSpec, TensorSpec


def apply_spec(model: nn.Module, spec: ModelSpec) -> None:
    """Give ``model`` the saved attributes and tensor shapes (values are left for the weights to fill).

    Raises ``StateError`` naming the modules or tensors when the model is not the saved architecture,
    and naming the attribute or tensor when one cannot be resized.
    """
    skip_saved_blocks(model, {name: module.type for name, module in spec.modules.items()})  # blocks removed by depth pruning
    modules = dict(model.named_modules(remove_duplicate=False))
    built = model.state_dict()
    _check_same_architecture(modules, built, spec)
    for name, module_spec in spec.modules.items():
        for attribute, value in module_spec.attributes.items():
            _set_attribute(modules[name], name, attribute, value)
    replaced: dict[int, Tensor] = {}  # id of a built tensor or a replacement -> replacement: ties stay tied
    for key, tensor_spec in spec.tensors.items():
        if (tuple(built[key].shape), built[key].dtype) != (tensor_spec.shape, tensor_spec.dtype):
            owner_name, _, leaf = key.rpartition(".")
            _replace_tensor(modules[owner_name], key, leaf, tensor_spec, replaced)


def _check_same_architecture(modules: dict[str, nn.Module], state: dict[str, Tensor], spec: ModelSpec) -> None:
    """Same module names and classes, same state-dict keys: anything else is a different model."""
    problems = []
    if missing := [name for name in spec.modules if name not in modules]:
        problems.append(f"modules missing from the built model: {_names(missing)}")
    if unexpected := [name for name in modules if name not in spec.modules]:
        problems.append(f"modules the saved model does not have: {_names(unexpected)}")
    retyped = [
        f"{name!r} (saved {spec.modules[name].type}, built {type(module).__qualname__})"
        for name, module in modules.items()
        if name in spec.modules and type(module).__qualname__ != spec.modules[name].type
    ]
    if retyped:
        problems.append(f"modules of another class: {', '.join(retyped[:10])}")
    if not problems:  # tensor keys only say something new once the modules agree
        if missing := [key for key in spec.tensors if key not in state]:
            problems.append(f"parameters or buffers missing from the built model: {_names(missing)}")
        if unexpected := [key for key in state if key not in spec.tensors]:
            problems.append(f"parameters or buffers the saved model does not have: {_names(unexpected)}")
    if problems:
        raise StateError(
            "the model from build_model_fn is not the architecture that was saved; " + "; ".join(problems)
        )


def _set_attribute(module: nn.Module, name: str, attribute: str, value: Attribute) -> None:
    """Set one saved size on a module, naming it when the module refuses (a read-only property)."""
    current = getattr(module, attribute, None)
    if isinstance(current, (int, tuple)) and current == value:
        return
    try:
        setattr(module, attribute, value)
    except (AttributeError, TypeError, ValueError) as error:
        where = f"{name}.{attribute}" if name else attribute
        raise StateError(f"cannot resize {where} of {type(module).__qualname__} to {value!r}: {error}") from None


def _replace_tensor(owner: nn.Module, key: str, leaf: str, spec: TensorSpec, replaced: dict[int, Tensor]) -> None:
    """Put an empty tensor of the saved shape and dtype in the parameter or buffer slot behind ``key``."""
    slots = owner._parameters if leaf in owner._parameters else owner._buffers
    current = slots.get(leaf)
    if current is None:
        raise StateError(
            f"cannot resize {key!r}: it is not a parameter or buffer of {type(owner).__qualname__} "
            "(a custom state-dict entry)"
        )
    if id(current) not in replaced:
        fresh = torch.empty(spec.shape, dtype=spec.dtype, device=current.device)
        if isinstance(current, nn.Parameter):
            fresh = nn.Parameter(fresh, requires_grad=current.requires_grad)
        replaced[id(current)] = replaced[id(fresh)] = fresh
    setattr(owner, leaf, replaced[id(current)])  # not the dict: modules tracking their tensors (RNNs) see it


def _names(names: Iterable[str], limit: int = 10) -> str:
    """The first ``limit`` names quoted, then how many more: error messages stay one readable line."""
    names = list(names)
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
