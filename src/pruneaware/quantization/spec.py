"""The ``quantization:`` section of a run spec, validated like the recipe: QAT in the last epochs of the pruned run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pruneaware.core.errors import ConfigError


class QATSpec(BaseModel):
    """Quantization-aware training for the last ``epochs`` epochs of the pruned run, then conversion to int8."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    epochs: int = Field(5, ge=1)
    """How many of the run's last epochs train with fake quantization; they must start after the sparsity schedule's last update."""
    backend: Literal["x86"] = "x86"
    """The int8 target: 'x86' (oneDNN int8 kernels; per-channel symmetric int8 weights, per-tensor uint8 activations)."""


class QuantizationSpec(BaseModel):
    """What happens to the pruned model's number format; only ``qat`` so far."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    qat: QATSpec | None = None

    @property
    def qat_enabled(self) -> bool:
        return self.qat is not None and self.qat.enabled

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> QuantizationSpec:
        """Validate a ``quantization:`` mapping; a bad value raises ConfigError naming ``quantization.<field>``."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as error:
            raise _config_error(error) from None


def _config_error(error: ValidationError) -> ConfigError:
    first = error.errors()[0]
    field = ".".join(["quantization", *(str(part) for part in first["loc"])])
    message = first["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
    if first["type"] == "extra_forbidden":
        message = "no such field; the 'quantization' section takes 'qat: {enabled, epochs, backend}' (docs/quantization.md)"
    return ConfigError(field, first.get("input"), message)
