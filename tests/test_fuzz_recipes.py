"""Fuzzing the shipped recipes: every mutated recipe either runs to its target or is refused, naming a field, before training.

Each case takes a shipped recipe (``src/pruneaware/recipes/*.yaml``), applies one to three
mutations (hostile values, deleted or unknown keys, sections borrowed from another recipe) and
trains a small MLP with it for a few steps. Allowed outcomes: a pruneaware error raised before
the first step that names a field, or a run whose weights are finite and whose counted sparsity
meets the recipe's target (or whose shortfall was logged as a warning). Anything else fails:
another exception type, an error after training started, a silently missed target, or a case
running past its time limit.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from pruneaware import Pruner, Recipe
from pruneaware.criteria import CRITERIA
from pruneaware.core.errors import ConfigError, PruneawareError

RECIPES_DIR = Path(__file__).resolve().parents[1] / "src" / "pruneaware" / "recipes"
RECIPES = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(RECIPES_DIR.glob("*.yaml"))}
for _recipe in RECIPES.values():
    _recipe.pop("train", None)
    _recipe.pop("quantization", None)

STEPS_PER_EPOCH, EPOCHS = 4, 5
CASE_SECONDS = 30
TOLERANCE = 0.02
OUTCOMES: Counter[str] = Counter()

HOSTILE = [
    0, 1, -1, 2, 3, 7, 10**30, 2**63, 0.0, 0.5, 0.9, 0.999, 0.9999999, 1.0, 1.5, -0.5, 1e-12, 1e308,
    math.inf, -math.inf, math.nan, True, False, None, "", "0", "0.5", "x", "2:4", [], [1000000, 1], [4, 4], {}, {"type": "x"},
]  # fmt: skip
BY_KEY: dict[str, list[Any]] = {
    "criterion": [*CRITERIA.names(), "nope"],
    "type": ["cubic", "linear", "polynomial", "exponential", "one_shot", "constant", "iterative", "element", "block", "nm", "l1", "l0", "sr_ste", "soft_movement", "topk_movement", "group_lasso", "x"],
    "unit": ["step", "epoch", "fraction", "hour"],
    "scope": ["layer", "global", "er", "erk"],
    "granularity": ["element", "block", "2:4", "1:8", "4:4", {"type": "block", "shape": [2, 2]}],
    "importance": ["l1", "l2", "taylor", "fisher", "random", "bn_scale", "nope"],
    "criterion_options": [{"seed": 3}, {"batches": 2}, {"rounds": 5}, {"samples": 2}, {"seed": "0"}, {"batches": 1e30}, {"nope": 1}],
    "modules": [["Linear"], ["Conv2d"], [], ["Embedding", "Linear"]],
    "exclude": [["0"], ["nope"], []],
}  # fmt: skip
NUMBERS = [math.inf, -math.inf, math.nan, 1e308, 1e30, 10**30, 2**63, 0, -1, 1e-12, 0.9999999, 1.0, True, "0", 10000, [1000000, 1]]
"""Values for numeric leaves: the overflows, non-finite and mistyped numbers a hostile user types."""
OPTIONS = ["seed", "batches", "rounds", "samples", "nope"]
SECTIONS: dict[str, Any] = {
    "rewind": {"to": 0}, "splice": {"band": 0.1}, "regrow": {"fraction": 0.3}, "target": {"params": 0.5},
    "regularizer": {"type": "l1", "strength": 1e-4}, "structured": {"schedule": {"type": "cubic", "final": 0.3}},
    "power": 2.0, "every": 0.1, "at": 0.5, "round_to": 4, "max_layer_ratio": 0.5, "remove_at": 0.5, "phase": "soft", "extra": 1,
}  # fmt: skip


class CaseTimeout(Exception):
    """A case ran past CASE_SECONDS: a hang as far as the fuzzer is concerned."""


class Warnings(logging.Handler):
    """Collects pruneaware warnings: a shortfall that was logged is reported, not silent."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path in a nested dict/list, containers included (the root excepted)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def parent_of(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


@st.composite
def mutated_recipes(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A shipped recipe with one to three mutations."""
    name = draw(st.sampled_from(sorted(RECIPES)))
    data = copy.deepcopy(RECIPES[name])
    for _ in range(draw(st.integers(1, 3))):
        everything = list(paths(data))
        numeric = [p for p in everything if _is_number(parent_of(data, p)[p[-1]])]
        operation = draw(st.sampled_from(["number", "number", "number", "replace", "replace", "scale", "delete", "add", "add", "borrow"]))
        if operation == "borrow" or not everything:
            other = RECIPES[draw(st.sampled_from(sorted(RECIPES)))]
            section = draw(st.sampled_from(sorted(set(other) - {"version", "name"})))
            data[section] = copy.deepcopy(other[section])
            continue
        path = draw(st.sampled_from(numeric if operation in ("number", "scale") and numeric else everything))
        parent, key = parent_of(data, path), path[-1]
        if operation == "number":
            parent[key] = copy.deepcopy(draw(st.sampled_from(NUMBERS)))
        elif operation == "replace":
            parent[key] = copy.deepcopy(draw(st.sampled_from(BY_KEY.get(key, HOSTILE) if draw(st.booleans()) else HOSTILE)))
        elif operation == "scale" and _is_number(parent[key]):
            parent[key] = parent[key] * draw(st.sampled_from([0, -1, 0.5, 2, 10, 1e6]))
        elif operation == "delete":
            del parent[key]
        elif operation == "add" and isinstance(parent[key], dict):
            if key == "criterion_options" or draw(st.booleans()) and "criterion" in parent[key]:
                options = parent[key] if key == "criterion_options" else parent[key].setdefault("criterion_options", {})
                options[draw(st.sampled_from(OPTIONS))] = copy.deepcopy(draw(st.sampled_from(NUMBERS)))
            else:
                field = draw(st.sampled_from(sorted(SECTIONS)))
                parent[key][field] = copy.deepcopy(SECTIONS[field])
    return name, data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mlp() -> nn.Sequential:
    """Named like the shipped recipes' 1-D CNN (``features.0`` first), so their scope patterns match."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    return nn.Sequential(OrderedDict(features=features, classifier=nn.Linear(64, 8)))


BATCHES = [(torch.randn(16, 16, generator=torch.Generator().manual_seed(i)), torch.arange(16) % 8) for i in range(4)]


def run_case(data: dict[str, Any]) -> str:
    """Run one mutated recipe; returns 'refused' or 'ran', raises AssertionError for anything the fuzzer forbids."""
    try:
        recipe = Recipe.from_dict(copy.deepcopy(data))
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        pruner = Pruner(
            model, optimizer, recipe, steps_per_epoch=STEPS_PER_EPOCH, epochs=EPOCHS,
            example_inputs=BATCHES[0][0], calibration_data=BATCHES, loss_fn=F.cross_entropy,
        )  # fmt: skip
    except PruneawareError as error:
        named = bool(error.field) if isinstance(error, ConfigError) else any(str(p[-1]) in str(error) for p in paths(data))
        assert named, f"refusal names no field: {error}"
        return "refused"
    before = {name: module.out_features for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    for step in range(STEPS_PER_EPOCH * EPOCHS):
        inputs, targets = BATCHES[step % len(BATCHES)]
        loss = F.cross_entropy(pruner.model(inputs), targets) + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pruner.finalize()
    assert all(torch.isfinite(p).all() for p in model.parameters()), "non-finite weights after training"
    assert pruner.summary().sparsity < 1.0, "every weight in scope removed"
    check_target(recipe, pruner, model, before)
    return "ran"


def check_target(recipe: Recipe, pruner: Pruner, model: nn.Module, before: dict[str, int]) -> None:
    """The counted sparsity (or removed channels) meets what the recipe asks, or a warning said it could not."""
    if recipe.structured is not None and recipe.structured.target is None:
        kept = [(name, n) for name, n in before.items() if name != list(before)[-1]]  # the classifier is never cut
        after = {name: module.out_features for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        removed = 1 - sum(after[name] for name, _ in kept) / sum(n for _, n in kept)
        asked = recipe.structured.schedule.final
        shortfall_logged = any("of channels removed where" in message for message in WARNINGS.messages)
        assert removed >= asked - TOLERANCE or shortfall_logged, f"removed {removed:.3f} of channels, asked {asked}, no warning"
        return
    asked = None
    if recipe.pruning is not None:
        asked = recipe.pruning.schedule.final
    elif recipe.regularizer is not None and recipe.regularizer.type == "topk_movement":
        asked = recipe.regularizer.schedule.final
    elif recipe.regularizer is not None and recipe.regularizer.type == "sr_ste":
        asked = 1 - recipe.regularizer.n / recipe.regularizer.m
    if asked is None:
        return
    counted = pruner.summary().sparsity
    assert counted < 1.0, "every weight in scope removed"
    shortfall_logged = any("weights removed where sparsity" in message for message in WARNINGS.messages)
    assert counted >= asked - TOLERANCE or shortfall_logged, f"counted sparsity {counted:.4f}, asked {asked}"
    if recipe.regularizer is None:  # a regularizer may legitimately zero more
        assert counted <= asked + TOLERANCE, f"counted sparsity {counted:.4f}, asked {asked}: over-pruned"


WARNINGS = Warnings()


def fuzz_one(case: tuple[str, dict[str, Any]]) -> str:
    """One case under a time limit, its outcome ('refused' or 'ran') tallied in OUTCOMES."""
    name, data = case

    def timeout(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"case ran past {CASE_SECONDS}s")

    WARNINGS.messages.clear()
    logging.getLogger("pruneaware").addHandler(WARNINGS)
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(CASE_SECONDS)
    try:
        outcome = run_case(data)
        OUTCOMES[outcome] += 1
        return outcome
    except AssertionError as error:
        OUTCOMES["wrong"] += 1
        raise AssertionError(f"{name}: {error}\nrecipe: {data!r}") from None
    except Exception as error:
        OUTCOMES["crash"] += 1
        raise AssertionError(f"{name}: {type(error).__name__}: {error}\nrecipe: {data!r}") from error
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        logging.getLogger("pruneaware").removeHandler(WARNINGS)


FUZZ = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck), print_blob=False)


def check_one(case: tuple[str, dict[str, Any]]) -> None:
    """``fuzz_one`` as hypothesis wants a test body: returning nothing."""
    fuzz_one(case)


def fuzz(cases: int) -> Counter[str]:
    """Run ``cases`` mutated recipes (the same ones every time: derandomized); the first failure fails the test."""
    OUTCOMES.clear()
    settings(FUZZ, max_examples=cases)(given(mutated_recipes())(check_one))()
    return OUTCOMES


def test_mutated_recipes_run_to_target_or_are_refused():
    outcomes = fuzz(200)
    assert outcomes["ran"] >= 25 and outcomes["refused"] >= 25 and outcomes["crash"] == outcomes["wrong"] == 0


@pytest.mark.slow
def test_mutated_recipes_long_run(capsys):
    outcomes = fuzz(3000)
    with capsys.disabled():
        print(f"\nrecipe fuzzing: {sum(outcomes.values())} cases, {dict(outcomes)}")
    assert outcomes["crash"] == outcomes["wrong"] == 0


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_recipes_run_unmutated(name):
    assert fuzz_one((name, RECIPES[name])) == "ran"
