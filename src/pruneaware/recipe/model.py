"""Recipes: the validated, serializable description of a pruning run (Python objects or YAML).

A recipe says *how much* (schedule), *what* (criterion at a granularity), *where* (scope) and
*how enforced* (masks, regularizer). Schedules and training length live in ``recipe.schedules``,
the structured section in ``recipe.structured``. Invalid values raise ConfigError naming the
field, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from pruneaware import granularity as gran
from pruneaware import schedules
from pruneaware.criteria import CRITERIA, Criterion
from pruneaware.criteria.options import check_criterion_options
from pruneaware.core.errors import ConfigError
from pruneaware.rules.regrow import Regrow
from pruneaware.regularizers.base import L1, Regularizer
from pruneaware.regularizers import L0, SRSTE
from pruneaware.regularizers.movement import SoftMovement, TopKMovement
from pruneaware.quantization.spec import QuantizationSpec
from pruneaware.rules.rewind import Rewind
from pruneaware.core.scope import DEFAULT_MODULE_TYPES, Scope
from pruneaware.rules.splice import Splice
from pruneaware.recipe.errors import config_error
from pruneaware.recipe.bounds import (
    BlockSide,
    Decay,
    Flag,
    Fraction,
    LearningRate,
    MeanStrength,
    Score,
    Seed,
    Time,
    WeightStrength,
)
from pruneaware.recipe.schedules import ScheduleSpec, TrainingLength, Unit, _Spec
from pruneaware.recipe.yaml_loading import load_strict
from pruneaware.recipe.structured import StructuredSpec

RECIPE_VERSION = 1

class ElementSpec(_Spec):
    type: Literal["element"] = "element"
    scope: Literal["layer", "global", "er", "erk"] = "global"

    def build(self) -> gran.Granularity:
        return gran.Element(scope=self.scope)


class BlockSpec(_Spec):
    type: Literal["block"]
    shape: tuple[BlockSide, BlockSide] = (1, 4)
    scope: Literal["layer", "global", "er", "erk"] = "layer"

    def build(self) -> gran.Granularity:
        return gran.Block(scope=self.scope, shape=self.shape)


class NMSpec(_Spec):
    type: Literal["nm"]
    n: BlockSide = 2
    m: BlockSide = 4

    @model_validator(mode="after")
    def _n_below_m(self) -> NMSpec:
        gran.NM(self.n, self.m)  # raises ConfigError for N >= M or M < 2
        return self

    def build(self) -> gran.Granularity:
        return gran.NM(self.n, self.m)


GranularitySpec = Annotated[Union[ElementSpec, BlockSpec, NMSpec], Field(discriminator="type")]


class RewindSpec(_Spec):
    """Lottery-ticket rewinding: after every pruning round the whole model returns to its state at ``to``, then is masked."""

    to: Time = 0.0
    """When the snapshot is taken, in the schedule's unit; 0 is the initialization (the original lottery ticket)."""
    reinit: Flag = False
    """The random-reinitialization control: the last round starts from a fresh initialization instead of the snapshot."""
    optimizer: Literal["reset", "keep"] = "reset"
    """reset: momentum and Adam moments start afresh at each rewind, as in a new training run; keep: they carry on."""
    seed: Seed = 0
    """Seed of the fresh initialization drawn by ``reinit``."""

    def build(self, module: Any, schedule: schedules.Schedule, unit: Unit, length: TrainingLength) -> Rewind:
        at = length.steps(self.to, unit, "pruning.rewind.to")
        return Rewind(module, at, schedule.update_steps(), reinit=self.reinit, reset_optimizer=self.optimizer == "reset", seed=self.seed)


class SpliceSpec(_Spec):
    """Dynamic network surgery: pruned weights keep training in a dense shadow and are spliced back when they grow."""

    band: Annotated[Fraction, Field(lt=1)] = 0.1
    """Hysteresis: kept weights are scored (1 + band) times, pruned ones (1 - band) times, before the cut to the target."""

    def build(self) -> Splice:
        return Splice(self.band)


class RegrowSpec(_Spec):
    """RigL: at each update after the first, drop the weakest active weights and grow those with the largest gradients."""

    fraction: Annotated[Fraction, Field(gt=0)] = 0.3
    """Share of each layer's active weights swapped at the first swap (RigL's alpha)."""
    decay: Literal["cosine", "constant"] = "cosine"
    """How that share shrinks towards the schedule's last update."""

    def build(self, schedule: schedules.Schedule) -> Regrow:
        return Regrow(self.fraction, schedule.update_steps()[0], schedule.last_step, self.decay)


class PruningSpec(_Spec):
    """What to remove (criterion at a granularity) and how much when (schedule)."""

    schedule: ScheduleSpec
    criterion: str = "magnitude"
    criterion_options: dict[str, Any] = Field(default_factory=dict)
    granularity: GranularitySpec = Field(default_factory=ElementSpec)
    rewind: RewindSpec | None = None
    """Rewind survivors to their values at step k after every pruning round (lottery tickets)."""
    splice: SpliceSpec | None = None
    """Pruned weights keep training and come back when they grow (dynamic network surgery)."""
    regrow: RegrowSpec | None = None
    """Drop weak weights and grow new ones at every update, sparsity held fixed (RigL)."""

    @field_validator("granularity", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """Accept ``"element"``, ``"block"`` or ``"2:4"`` for the common cases."""
        if isinstance(value, int):
            raise ValueError('"N:M" in quotes, e.g. granularity: "2:4" (YAML reads an unquoted 2:4 as the number 124)')
        if isinstance(value, str):
            if ":" in value:
                n, _, m = value.partition(":")
                if not (n.strip().isdigit() and m.strip().isdigit()):
                    raise ValueError("'N:M' with integers, e.g. '2:4'")
                return {"type": "nm", "n": int(n), "m": int(m)}
            return {"type": value}
        return value

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, name: str) -> str:
        if name not in CRITERIA:
            raise ValueError(f"one of {CRITERIA.names()}")
        return name

    @field_validator("criterion_options")
    @classmethod
    def _options_of_criterion(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        criterion = info.data.get("criterion")
        return check_criterion_options(criterion, options) if criterion is not None else options

    @model_validator(mode="after")
    def _name_schedule_section(self) -> PruningSpec:
        self.schedule.within("pruning")
        return self

    @model_validator(mode="after")
    def _nm_target(self) -> PruningSpec:
        if isinstance(self.granularity, NMSpec):
            expected = 1.0 - self.granularity.n / self.granularity.m
            if abs(self.schedule.final - expected) > 1e-9:
                raise ValueError(
                    f"schedule final sparsity {expected} for {self.granularity.n}:{self.granularity.m} "
                    f"(that granularity ends at 1 - N/M), not {self.schedule.final}"
                )
        return self

    @model_validator(mode="after")
    def _one_lifecycle_rule(self) -> PruningSpec:
        chosen = [name for name in ("rewind", "splice", "regrow") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"at most one of 'rewind', 'splice', 'regrow' in one recipe, not {chosen}")
        if self.regrow is not None and not isinstance(self.granularity, ElementSpec):
            raise ValueError(f"granularity 'element' with 'regrow' (RigL swaps single weights), not {self.granularity.type!r}")
        return self

    def build_criterion(self) -> Criterion:
        try:
            return CRITERIA.build(self.criterion, **self.criterion_options)
        except TypeError as error:
            raise ConfigError("pruning.criterion_options", self.criterion_options, f"options {self.criterion!r} accepts ({error})") from None


class ScopeSpec(_Spec):
    modules: tuple[str, ...] = DEFAULT_MODULE_TYPES
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    parameter: str = "weight"
    skip_last: Flag = True

    def build(self) -> Scope:
        return Scope(**self.model_dump())


class L1Spec(_Spec):
    type: Literal["l1"]
    strength: WeightStrength
    proximal: Flag = False

    def build(self, length: TrainingLength) -> Regularizer:
        return L1(self.strength, self.proximal)


class L0Spec(_Spec):
    """Hard-concrete L0 gates on every weight in scope (Louizos et al. 2018); closed gates become pruned."""

    type: Literal["l0"]
    strength: WeightStrength
    droprate_init: Annotated[Fraction, Field(gt=0, le=0.9)] = 0.5
    """Initial drop probability of every gate; above 0.9 every gate starts closed and the whole model is pruned at once."""
    lr: LearningRate = 0.01
    """Learning rate of the Adam that trains the gates (the model's optimizer trains the weights)."""
    seed: Seed = 0

    def build(self, length: TrainingLength) -> Regularizer:
        return L0(self.strength, self.droprate_init, self.lr, self.seed)


class SRSTESpec(_Spec):
    """N:M-sparse forward, dense weights trained by the sparse-refined straight-through estimator (Zhou et al. 2021)."""

    type: Literal["sr_ste"]
    n: BlockSide = 2
    m: BlockSide = 4
    decay: Decay = 2e-4

    @model_validator(mode="after")
    def _n_below_m(self) -> SRSTESpec:
        gran.NM(self.n, self.m)  # raises ConfigError for N >= M or M < 2
        return self

    def build(self, length: TrainingLength) -> Regularizer:
        return SRSTE(self.n, self.m, self.decay)


class SoftMovementSpec(_Spec):
    """Soft movement pruning (Sanh et al. 2020): learned scores, weights kept above ``threshold``, ``strength * mean(sigmoid(S))`` pulling scores down."""

    type: Literal["soft_movement"]
    strength: MeanStrength
    threshold: Score = 0.0
    init: Score = 1.0
    """Every score's starting value; above ``threshold``, so training starts dense."""
    lr: LearningRate = 0.01
    """Learning rate of the scores' own optimizer (the model's optimizer trains the weights)."""
    optimizer: Literal["adam", "sgd"] = "adam"

    @model_validator(mode="after")
    def _starts_above_threshold(self) -> SoftMovementSpec:
        if not self.init > self.threshold:
            raise ValueError(f"an init above the threshold ({self.threshold}); otherwise every weight starts pruned")
        return self

    def build(self, length: TrainingLength) -> Regularizer:
        return SoftMovement(self.strength, self.threshold, self.init, self.lr, self.optimizer)


class TopKMovementSpec(_Spec):
    """The paper's hard movement pruning: learned scores, the mask the top-k of them after every step, k set by ``schedule``."""

    type: Literal["topk_movement"]
    schedule: ScheduleSpec
    allocation: Literal["layer", "global", "erk", "er"] = "layer"
    """How the kept weights are shared out: ``layer`` is the paper's per-matrix top-k."""
    init: Score = 0.0
    lr: LearningRate = 0.01
    """Learning rate of the scores' own optimizer (the model's optimizer trains the weights)."""
    optimizer: Literal["adam", "sgd"] = "adam"

    @model_validator(mode="after")
    def _name_schedule_section(self) -> TopKMovementSpec:
        self.schedule.within("regularizer")
        return self

    def build(self, length: TrainingLength) -> Regularizer:
        return TopKMovement(self.schedule.build(length), self.allocation, self.init, self.lr, self.optimizer)


RegularizerSpec = Annotated[Union[L1Spec, L0Spec, SRSTESpec, SoftMovementSpec, TopKMovementSpec], Field(discriminator="type")]
REPARAMETRIZING = (L0Spec, SRSTESpec, SoftMovementSpec, TopKMovementSpec)
"""Regularizers that decide the masks themselves, so a recipe with one has no pruning or structured section."""


class Recipe(_Spec):
    """A complete pruning recipe; build one in Python, from a dict, or from YAML."""

    version: Literal[1] = RECIPE_VERSION
    name: str = "custom"
    pruning: PruningSpec | None = None
    scope: ScopeSpec = Field(default_factory=ScopeSpec)
    regularizer: RegularizerSpec | None = None
    structured: StructuredSpec | None = None
    stages: tuple[str | dict[str, Any], ...] | None = None
    """Optional: every stage of the run in order, section stages by name (prune, channels, ...), others as ``{type: name, ...options}``."""
    quantization: QuantizationSpec | None = None
    """Optional: QAT over the run's last epochs (the ``qat`` stage); needs the Pruner's ``steps_per_epoch``, ``epochs`` and ``example_inputs``."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_a_number(cls, value: Any) -> Any:
        if type(value) is not int:  # YAML's true would otherwise pass as 1
            raise ValueError(f"the recipe format version as a whole number: {RECIPE_VERSION}")
        return value

    @model_validator(mode="after")
    def _reparametrizing_regularizer_alone(self) -> Recipe:
        if isinstance(self.regularizer, REPARAMETRIZING) and (self.pruning is not None or self.structured is not None):
            raise ValueError(
                f"regularizer {self.regularizer.type!r} decides the masks itself; leave out the "
                f"'{'pruning' if self.pruning is not None else 'structured'}' section"
            )
        return self

    @model_validator(mode="after")
    def _channels_fit_nm_groups(self) -> Recipe:
        granularity = self.pruning.granularity if self.pruning is not None else None
        if isinstance(granularity, NMSpec) and self.structured is not None and (self.structured.round_to or 1) % granularity.m:
            raise ValueError(
                f"structured.round_to a multiple of {granularity.m} with N:M granularity {granularity.n}:{granularity.m}: "
                "channel removal must leave every layer's inputs divisible into groups of M"
            )
        return self

    @model_validator(mode="after")
    def _does_something(self) -> Recipe:
        if self.pruning is None and self.regularizer is None and self.structured is None and not self.stages:
            raise ValueError("a 'pruning', 'structured' or 'regularizer' section, or a 'stages' list")
        for entry in self.stages or ():
            if isinstance(entry, dict) and not isinstance(entry.get("type"), str):
                raise ValueError(f"stages entries as a name or {{type: name, option: value}}, not {entry!r}")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Validate ``data``, turning schema errors into one ConfigError."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise config_error(error, data) from None

    @classmethod
    def from_yaml(cls, source: str | Path) -> Recipe:
        """Load a recipe file; its ``train:`` and ``quantization:`` sections belong to the run (``RunSpec``) and are ignored here."""
        data = read_yaml_mapping(source)
        data.pop("train", None)
        data.pop("quantization", None)
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"quantization"} if self.quantization is None else None)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        """Stable short hash of the recipe's content, stored in checkpoints to catch mismatched resumes."""
        content = {key: value for key, value in self.to_dict().items() if key != "stages" or value is not None}  # as before 'stages' existed
        content.pop("quantization", None)  # the qat stage checks its own state, so runs saved before it was a stage resume
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def read_yaml_mapping(source: str | Path) -> dict[str, Any]:
    """Parse a YAML file into a dict, with a one-line error when it is missing or malformed."""
    path = Path(source)
    if not path.is_file():
        raise ConfigError("recipe", str(source), "the path of an existing YAML recipe file")
    try:
        data = load_strict(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError("recipe", str(source), f"valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError("recipe", str(source), "a YAML mapping with 'pruning:' and/or 'regularizer:' sections")
    return data

