"""What a comparison runs: one model, dataset, seed list and epoch budget shared by every method and sparsity."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pruneaware.core.errors import ConfigError
from pruneaware.job.spec import TrainSpec
from pruneaware.recipe import read_yaml_mapping

DENSE = "dense"
_SHARED_TRAIN_FIELDS = ("dataset", "model", "epochs", "seed", "dense_baseline")


class MethodSpec(BaseModel):
    """One method: a shipped recipe (or recipe file) whose final sparsity the comparison sets per column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    recipe: str
    """Name of a shipped recipe (``pruneaware/recipes/<name>.yaml``) or path of a recipe file."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Recipe fields replaced before the sparsity is set, by dotted path, e.g. ``{pruning.criterion: movement}``."""
    train: dict[str, Any] = Field(default_factory=dict)
    """Optimizer settings for this method only (lr, lr_schedule, ...); epochs, data and seed are never overridden."""
    sparsities: list[float] | None = None
    """The columns this method runs (default: all); other cells read n/a."""
    strengths: dict[float, float] = Field(default_factory=dict)
    """For L0, which has no sparsity target: the penalty strength used for each column."""
    from_dense: bool = False
    """Post-training: start from the seed's trained dense model and fine-tune for the same epoch budget."""

    @field_validator("train")
    @classmethod
    def _no_budget_overrides(cls, train: dict[str, Any]) -> dict[str, Any]:
        shared = sorted(set(train) & set(_SHARED_TRAIN_FIELDS))
        if shared:
            raise ValueError(f"optimizer settings only; {shared} are the same for every method (set them at the top level)")
        return train


class ComparisonSpec(BaseModel):
    """Methods × sparsities × seeds on one model and dataset, every run with ``epochs`` epochs of training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dataset: str
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    model: str
    epochs: int = Field(ge=1)
    seeds: list[int] = Field(min_length=1)
    sparsities: list[float] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    """Optimizer settings shared by every run (TrainSpec fields other than dataset, model, epochs, seed)."""
    methods: list[MethodSpec] = Field(min_length=1)

    @field_validator("seeds", mode="before")
    @classmethod
    def _count_to_list(cls, seeds: Any) -> Any:
        """``seeds: 3`` means seeds 0, 1, 2."""
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if seeds < 1:
                raise ValueError("at least 1 seed (a count >= 1 or a non-empty list)")
            return list(range(seeds))
        return seeds

    @field_validator("sparsities")
    @classmethod
    def _fractions(cls, sparsities: list[float]) -> list[float]:
        for value in sparsities:
            if not 0.0 <= value < 1.0:
                raise ValueError(f"sparsities in [0, 1) (0.9 = 90% of weights removed), not {value}")
        if len(set(sparsities)) != len(sparsities):
            raise ValueError("distinct sparsities")
        return sorted(sparsities)

    @model_validator(mode="after")
    def _methods_fit(self) -> ComparisonSpec:
        labels = [method.label for method in self.methods]
        if DENSE in labels or len(set(labels)) != len(labels):
            raise ValueError(f"distinct method labels other than {DENSE!r} (the dense baseline is always run), not {labels}")
        for method in self.methods:
            outside = sorted(set(method.sparsities or ()) - set(self.sparsities))
            if outside:
                raise ValueError(f"method {method.label!r}: sparsities {outside} are not columns of the comparison {self.sparsities}")
        TrainSpec.model_validate(self.train_fields(None, 0))
        return self

    def method_sparsities(self, method: MethodSpec) -> list[float]:
        return sorted(method.sparsities) if method.sparsities is not None else list(self.sparsities)

    def train_fields(self, method: MethodSpec | None, seed: int) -> dict[str, Any]:
        """The TrainSpec of one run: shared settings, the method's optimizer overrides, then the fixed budget."""
        overrides = method.train if method is not None else {}
        return {**self.train, **overrides, "dataset": self.dataset, "model": self.model, "epochs": self.epochs, "seed": seed, "dense_baseline": False}

    def with_overrides(self, **fields: Any) -> ComparisonSpec:
        """A copy with top-level fields replaced (CLI flags); ``None`` values are ignored."""
        changes = {key: value for key, value in fields.items() if value is not None}
        return ComparisonSpec.from_mapping({**self.model_dump(), **changes})

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ComparisonSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise _comparison_error(error) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ComparisonSpec:
        return cls.from_mapping(read_yaml_mapping(path))


def comparison_path(source: str) -> Path:
    """A comparison file, or the name of one shipped in ``pruneaware/comparisons``."""
    if source.endswith((".yaml", ".yml")) or Path(source).exists():
        return Path(source)
    path = Path(str(resources.files("pruneaware") / "comparisons" / f"{source}.yaml"))
    if not path.is_file():
        raise ConfigError("comparison", source, sorted(p.stem for p in path.parent.glob("*.yaml")))
    return path


def _comparison_error(error: ValidationError) -> ConfigError:
    first = error.errors()[0]
    field = "comparison." + ".".join(str(part) for part in first["loc"]) if first["loc"] else "comparison"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "no such field; see docs/results.md for the comparison file's fields"
    return ConfigError(field, first.get("input"), message)
