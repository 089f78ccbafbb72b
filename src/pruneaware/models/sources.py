"""``train.model`` resolved: a built-in name, ``torchvision:<name>``, a Hugging Face folder or a ``package.module:function``."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from pruneaware.core.errors import ConfigError
from pruneaware.models import MODELS, build_model
from pruneaware.models.huggingface import folder_task, is_model_folder, load_folder_model
from pruneaware.models.imports import import_object, is_reference

TORCHVISION = "torchvision:"
FIELD = "train.model"


def model_task(reference: str, task: str) -> str:
    """``task`` unless ``'auto'``: then what a Hugging Face folder's architecture does, else classification."""
    if task != "auto":
        return task
    return folder_task(reference) if is_model_folder(reference) else "classification"


def resolve_model(reference: str, options: dict[str, Any], *, task: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A freshly initialized (or ``from_pretrained``) model for the data's input shape and class count."""
    if reference in MODELS:
        return build_model(reference, input_shape, num_classes, **options)
    if reference.startswith(TORCHVISION):
        return _torchvision(reference.removeprefix(TORCHVISION), options, num_classes)
    if is_model_folder(reference):
        return load_folder_model(reference, task, num_classes, **options)
    if is_reference(reference):
        return _factory(reference, options, num_classes)
    raise ConfigError(FIELD, reference, f"a built-in model ({', '.join(MODELS.names())}), 'torchvision:<name>', a Hugging Face model folder or 'package.module:function'")


def _torchvision(name: str, options: dict[str, Any], num_classes: int) -> nn.Module:
    try:
        import torchvision
    except ImportError:
        raise ConfigError(FIELD, TORCHVISION + name, "torchvision installed: pip install 'pruneaware[vision]'") from None
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise ConfigError(FIELD, TORCHVISION + name, f"a torchvision classification model: {', '.join(names)}")
    try:
        return torchvision.models.get_model(name, weights=None, **{"num_classes": num_classes, **options})
    except (TypeError, ValueError) as error:
        raise ConfigError("train.model_options", options, f"arguments torchvision's {name} accepts ({error})") from None


def _factory(reference: str, options: dict[str, Any], num_classes: int) -> nn.Module:
    factory = import_object(reference, FIELD)
    parameters = inspect.signature(factory).parameters
    if "num_classes" in parameters and "num_classes" not in options:
        options = {**options, "num_classes": num_classes}
    try:
        model = factory(**options)
    except TypeError as error:
        raise ConfigError("train.model_options", options, f"keyword arguments {reference} accepts ({error})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(FIELD, reference, f"a function returning a torch.nn.Module; it returned {type(model).__name__}")
    return model
