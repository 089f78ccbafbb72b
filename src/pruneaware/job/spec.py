"""What the main job trains: the ``train:`` section of a recipe file, validated like the recipe."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pruneaware.errors import ConfigError
from pruneaware.quantization.spec import QuantizationSpec
from pruneaware.recipe import Recipe, _config_error, read_yaml_mapping


class TrainSpec(BaseModel):
    """Dataset, model and optimization of a run; the same settings train the dense baseline and the pruned model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "mnist1d"
    model: str = "cnn1d"
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(100, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    seed: int = 0
    dense_baseline: bool = True
    """Also train the unpruned model the same way, for the dense-vs-pruned comparison."""


class RunSpec(BaseModel):
    """A recipe plus how to train it: everything the main job needs, saved in the run folder."""

    model_config = ConfigDict(frozen=True)

    recipe: Recipe
    train: TrainSpec
    quantization: QuantizationSpec = QuantizationSpec()
    """QAT in the last epochs of the pruned run and an int8 model in the report (docs/quantization.md)."""

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        try:
            train = TrainSpec.model_validate(data.pop("train", {}) or {})
        except ValidationError as error:
            raise _train_error(error) from None
        quantization = QuantizationSpec.from_mapping(data.pop("quantization", None))
        return cls(recipe=Recipe.from_dict(data), train=train, quantization=quantization)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunSpec:
        return cls.from_mapping(read_yaml_mapping(path))

    def to_mapping(self) -> dict[str, Any]:
        quantization = {"quantization": self.quantization.model_dump(mode="json")} if self.quantization.qat is not None else {}
        return {**self.recipe.to_dict(), "train": self.train.model_dump(mode="json"), **quantization}

    def with_overrides(self, **train_fields: Any) -> RunSpec:
        """A copy with some ``train`` fields replaced (CLI flags); ``None`` values are ignored."""
        changes = {key: value for key, value in train_fields.items() if value is not None}
        return RunSpec.from_mapping({**self.to_mapping(), "train": {**self.train.model_dump(), **changes}})


def default_recipe_path(name: str = "default") -> Path:
    """A recipe shipped with the package (``pruneaware/recipes/<name>.yaml``)."""
    path = Path(str(resources.files("pruneaware") / "recipes" / f"{name}.yaml"))
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError("recipe", name, shipped)
    return path


def _train_error(error: ValidationError) -> ConfigError:
    wrapped = _config_error(error)
    return ConfigError(wrapped.field.replace("recipe.", "train.", 1), wrapped.value, wrapped.expected)
