"""The ``structured`` recipe section: channel and head removal, its phases, targets and regularizers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Strict, ValidationInfo, field_validator, model_validator

from pruneaware.recipe.bounds import MAX_BLOCK, Flag, Fraction, Time, WeightStrength
from pruneaware.recipe.schedules import ScheduleSpec, TrainingLength, _Spec
from pruneaware.structured.target import ResourceTarget

class ResourceTargetSpec(_Spec):
    """A MACs, parameter or latency budget: ``{macs: 0.5}``, ``{params: 0.4}``, ``{latency: 0.5}`` (of dense, predicted
    from the device's latency table) or ``{latency_ms: 12}``, latency on ``backend`` at ``batch``."""

    macs: Annotated[Fraction, Field(gt=0, lt=1)] | None = None
    params: Annotated[Fraction, Field(gt=0, lt=1)] | None = None
    latency: Annotated[Fraction, Field(gt=0, lt=1)] | None = None
    latency_ms: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)] | None = None
    backend: Literal["torch", "onnxruntime", "cuda"] = "torch"
    batch: Annotated[int, Strict(), Field(ge=1, le=65536)] = 1
    threads: Annotated[int, Strict(), Field(ge=1, le=1024)] | None = None
    table: str | None = None
    """A saved latency table (JSON) to use instead of the cached or freshly built one; refused if measured elsewhere."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ResourceTargetSpec:
        given = [name for name in ("macs", "params", "latency", "latency_ms") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of 'macs', 'params', 'latency' or 'latency_ms' (got {given or 'none'}), e.g. target: {{macs: 0.5}}")
        latency_options = [name for name in ("backend", "batch", "threads", "table") if name in self.model_fields_set]
        if latency_options and given[0] in ("macs", "params"):
            raise ValueError(f"{latency_options} only with a latency target ('latency' or 'latency_ms')")
        return self

    def build(self) -> Any:
        if self.macs is not None:
            return ResourceTarget("macs", self.macs)
        if self.params is not None:
            return ResourceTarget("params", self.params)
        from pruneaware.hardware.backends import backend
        from pruneaware.hardware.target import LatencyTarget

        backend(self.backend)  # refused at once, with the fix, when not installed here
        return LatencyTarget(self.latency, self.latency_ms, self.backend, self.batch, self.threads, self.table)


class ChannelRegularizerSpec(_Spec):
    """A penalty on coupled channel groups while the structured schedule ramps, added by ``Pruner.penalty()``."""

    type: Literal["group_lasso", "bn_scale", "growing"]
    strength: WeightStrength
    alpha: Annotated[float, Strict(), Field(ge=1, le=1000)] = 1.0
    """group_lasso only: the weakest channel of a group is penalised up to alpha times more than the strongest."""

    @model_validator(mode="after")
    def _alpha_for_group_lasso(self) -> ChannelRegularizerSpec:
        if self.alpha != 1 and self.type != "group_lasso":
            raise ValueError(f"'alpha' only with type: group_lasso (type {self.type!r} has no per-channel scaling)")
        return self

    def build(self, channels: Any) -> Any:
        from pruneaware.regularizers.channel import build_channel_regularizer

        return build_channel_regularizer(self.type, channels, self.strength, self.alpha)


class StructuredSpec(_Spec):
    """Channel pruning with physical removal: how much (schedule of the fraction of channels), ranked how."""

    schedule: ScheduleSpec
    importance: str = "l2"
    allocation: Literal["global", "uniform"] = "global"
    ignore: tuple[str, ...] = ()
    """Glob patterns of modules whose output channels are never removed (the classifier is added by scope.skip_last)."""
    max_layer_ratio: Annotated[Fraction, Field(gt=0, validate_default=True)] = 0.9
    round_to: Annotated[int, Strict(), Field(ge=1, le=MAX_BLOCK)] | None = None
    phase: Literal["hard", "soft"] = "hard"
    """hard: remove channels at every update; soft: zero them (reversibly) until ``remove_at``, then remove."""
    remove_at: Time | Literal["end"] = "end"
    """Soft phase only: when the zeroed channels are removed, in the schedule's unit ('end': its last update)."""
    target: ResourceTargetSpec | None = None
    """Stop pruning (and end a soft phase) as soon as MACs or parameters fall to this fraction of dense."""
    heads: Flag = True
    """Attention modules lose whole heads (true) or the same dimensions from every head (false)."""
    regularizer: ChannelRegularizerSpec | None = None
    """A penalty on whole channel groups (group_lasso, bn_scale, growing) that prepares channels for removal."""

    @field_validator("max_layer_ratio")
    @classmethod
    def _final_reachable(cls, ratio: float, info: ValidationInfo) -> float:
        schedule = info.data.get("schedule")
        if schedule is not None and schedule.final > ratio:
            raise ValueError(
                f"at least the schedule's final fraction ({schedule.final:g}): no layer loses more than max_layer_ratio "
                f"of its channels, so at most {ratio:g} of them can go; raise max_layer_ratio or lower structured.schedule.final"
            )
        return ratio

    @model_validator(mode="after")
    def _name_schedule_section(self) -> StructuredSpec:
        self.schedule.within("structured")
        return self

    @model_validator(mode="after")
    def _remove_at_needs_soft(self) -> StructuredSpec:
        if self.remove_at != "end" and self.phase != "soft":
            raise ValueError("'remove_at' only with phase: soft (a hard phase removes channels at every update)")
        return self

    def removal_step(self, length: TrainingLength) -> int | None:
        """The step at which a soft phase ends (None: the schedule's last update)."""
        if self.remove_at == "end":
            return None
        return length.steps(self.remove_at, self.schedule.unit, "structured.remove_at")

    @field_validator("importance")
    @classmethod
    def _known_importance(cls, name: str) -> str:
        from pruneaware.criteria.channel import CHANNEL_CRITERIA

        if name not in CHANNEL_CRITERIA:
            raise ValueError(f"one of {CHANNEL_CRITERIA.names()}")
        return name
