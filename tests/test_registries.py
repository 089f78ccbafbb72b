"""One registry class for every kind chosen by name, one naming scheme, and errors that list the valid names."""

from __future__ import annotations

import re

import pytest

import pruneaware as pa
from pruneaware.core.errors import ConfigError
from pruneaware.core.registry import STAGES, Registry
from pruneaware.criteria import CRITERIA
from pruneaware.criteria.channel import CHANNEL_CRITERIA
from pruneaware.data.splits import DATASETS
from pruneaware.methods import METHODS
from pruneaware.models import MODELS

REGISTRIES = {"CRITERIA": CRITERIA, "CHANNEL_CRITERIA": CHANNEL_CRITERIA, "STAGES": STAGES, "METHODS": METHODS, "MODELS": MODELS, "DATASETS": DATASETS}


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_every_kind_is_one_registry_class_with_snake_case_names(name: str) -> None:
    registry = REGISTRIES[name]
    assert type(registry) is Registry
    assert registry.names(), f"{name} is empty"
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", entry) for entry in registry.names()), registry.names()


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_an_unknown_name_lists_the_valid_ones(name: str) -> None:
    registry = REGISTRIES[name]
    with pytest.raises(ConfigError) as caught:
        registry.get("no_such_entry")
    assert caught.value.value == "no_such_entry"
    assert all(repr(entry) in str(caught.value) for entry in registry.names())


def test_criteria_of_every_kind_are_registered_where_recipes_look() -> None:
    assert {"magnitude", "movement", "snip", "grasp", "synflow", "obd", "wanda"} <= set(CRITERIA.names())
    assert {"l1", "l2", "taylor", "fisher", "bn_scale"} <= set(CHANNEL_CRITERIA.names())
    assert set(pa.methods.__all__) | {"sparse_finetune"} == set(METHODS.names())
    assert METHODS.build("one_shot", 0.5, at=0, unit="step") == pa.methods.one_shot(0.5, at=0, unit="step")


def test_recipes_name_the_valid_criteria_of_their_section() -> None:
    with pytest.raises(ConfigError, match="pruning.criterion.*'magnitude'"):
        pa.Recipe.from_dict({"pruning": {"criterion": "nope", "schedule": {"type": "one_shot", "sparsity": 0.5}}})
    with pytest.raises(ConfigError, match="structured.importance.*'taylor'"):
        pa.Recipe.from_dict({"structured": {"importance": "nope", "schedule": {"type": "one_shot", "sparsity": 0.5}}})
