"""What the main job trains: the ``train:`` section of a recipe file, validated like the recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pruneaware.core.errors import ConfigError
from pruneaware.quantization.spec import QuantizationSpec
from pruneaware.recipe import Recipe, read_yaml_mapping
from pruneaware.recipe.errors import config_error


class TrainSpec(BaseModel):
    """Dataset, model and optimization of a run; the same settings train the dense baseline and the pruned model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "mnist1d"
    """A built-in dataset, an image folder, a .csv/.jsonl/.txt file or ``package.module:function`` (docs/main-job.md)."""
    data_options: dict[str, Any] = {}
    """Keyword arguments of the data source: image_size, val_fraction, text_column, label_column, max_length, block_size, tokenizer."""
    model: str = "cnn1d"
    """A built-in model, ``torchvision:<name>``, a Hugging Face model folder or ``package.module:function``."""
    model_options: dict[str, Any] = {}
    """Keyword arguments of the model factory (``num_classes`` is filled in from the data when the factory takes it)."""
    weights: str | None = None
    """Pretrained weights to start from: a .safetensors file or a state_dict saved with torch.save."""
    task: Literal["auto", "classification", "causal_lm", "embedding"] = "auto"
    """auto: what a Hugging Face folder's architecture does, else classification."""
    device: str = "auto"
    """auto (CUDA when present), cpu, cuda or cuda:<index>."""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on the CPU)."""
    threads: int | None = Field(None, ge=1, le=1024)
    """Torch intra-op threads for the job (None: torch's choice); fixed threads make CPU results repeatable."""
    deterministic: bool = True
    """torch.use_deterministic_algorithms for the job on CUDA (CPU kernels repeat at a fixed thread count)."""
    eval_batch_size: int = Field(1000, ge=1)
    log_every: int = Field(10, ge=1)
    """Steps between rows of the per-step log (steps.csv and TensorBoard)."""
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
    """The recipe, with the file's ``quantization:`` section (the ``qat`` stage) when it has one."""
    train: TrainSpec

    @property
    def quantization(self) -> QuantizationSpec:
        """QAT in the last epochs of the pruned run and an int8 model in the report (docs/quantization.md)."""
        return self.recipe.quantization or QuantizationSpec()

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        try:
            train_data = data.pop("train", {}) or {}
            train = TrainSpec.model_validate(train_data)
        except ValidationError as error:
            raise _train_error(error, train_data) from None
        quantization = QuantizationSpec.from_mapping(data.pop("quantization", None))  # errors named quantization.<field>
        if quantization.qat is not None:
            data["quantization"] = quantization
        return cls(recipe=Recipe.from_dict(data), train=train)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunSpec:
        return cls.from_mapping(read_yaml_mapping(path))

    def to_mapping(self) -> dict[str, Any]:
        return {**self.recipe.to_dict(), "train": self.train.model_dump(mode="json")}

    def with_overrides(self, **train_fields: Any) -> RunSpec:
        """A copy with some ``train`` fields replaced (CLI flags); ``None`` values are ignored."""
        changes = {key: value for key, value in train_fields.items() if value is not None}
        return RunSpec.from_mapping({**self.to_mapping(), "train": {**self.train.model_dump(), **changes}})



def _train_error(error: ValidationError, data: Any) -> ConfigError:
    wrapped = config_error(error, data)
    return ConfigError(wrapped.field.replace("recipe.", "train.", 1), wrapped.value, wrapped.expected)
