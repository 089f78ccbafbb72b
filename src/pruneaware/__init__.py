"""pruneaware: pruning-aware training for PyTorch."""

from types import ModuleType

from pruneaware import _deprecated

_deprecated.install()  # old module paths (pruneaware.masks, ...) keep working for one release

from pruneaware import integrations  # lazy: Lightning and transformers load only when a callback is used
from pruneaware import llm
from pruneaware import methods
from pruneaware.core.driver import Pruner
from pruneaware.core.errors import ConfigError, PruneawareError, ScopeError, StateError, UsageError
from pruneaware.criteria import CRITERIA, Criterion
from pruneaware.export import export_onnx, load, save
from pruneaware.measure.sparsity import Summary
from pruneaware.recipe import Recipe

__version__ = "0.1.0"


def __getattr__(name: str) -> ModuleType:
    """An old module path read as an attribute (``pruneaware.masks``): the module that replaced it, with a DeprecationWarning."""
    return _deprecated.attribute(__name__, name)


__all__ = [
    "CRITERIA",
    "ConfigError",
    "Criterion",
    "Pruner",
    "PruneawareError",
    "Recipe",
    "ScopeError",
    "StateError",
    "Summary",
    "UsageError",
    "export_onnx",
    "llm",
    "integrations",
    "load",
    "methods",
    "save",
]
