"""pruneaware: pruning-aware training for PyTorch."""

from pruneaware import integrations  # lazy: Lightning and transformers load only when a callback is used
from pruneaware import llm
from pruneaware import methods as recipes
from pruneaware.criteria import CRITERIA, Criterion
from pruneaware.core.errors import ConfigError, PruneawareError, ScopeError, StateError, UsageError
from pruneaware.export import export_onnx, load, save
from pruneaware.core.driver import Pruner
from pruneaware.recipe import Recipe
from pruneaware.summary import Summary

__version__ = "0.1.0"

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
    "recipes",
    "save",
]
