"""The recipe: the validated, serializable description of a pruning run, read from YAML or built in Python.

``model`` holds ``Recipe`` and its sections, ``schedules`` and ``structured`` the schedule and
structured sections, ``bounds`` the bounded field types, ``errors`` the schema-error wording and
``yaml_loading`` the strict YAML reader. The recipes shipped with the package are YAML files in
``pruneaware/recipes/``.
"""

from pruneaware.recipe.model import (
    BlockSpec,
    ElementSpec,
    L0Spec,
    L1Spec,
    NMSpec,
    PruningSpec,
    Recipe,
    RegrowSpec,
    RewindSpec,
    ScopeSpec,
    SoftMovementSpec,
    SpliceSpec,
    SRSTESpec,
    TopKMovementSpec,
    read_yaml_mapping,
)
from pruneaware.recipe.schedules import ScheduleSpec, TrainingLength
from pruneaware.recipe.structured import StructuredSpec

__all__ = [
    "BlockSpec",
    "ElementSpec",
    "L0Spec",
    "L1Spec",
    "NMSpec",
    "PruningSpec",
    "Recipe",
    "RegrowSpec",
    "RewindSpec",
    "SRSTESpec",
    "ScheduleSpec",
    "ScopeSpec",
    "SoftMovementSpec",
    "SpliceSpec",
    "StructuredSpec",
    "TopKMovementSpec",
    "TrainingLength",
    "read_yaml_mapping",
]
