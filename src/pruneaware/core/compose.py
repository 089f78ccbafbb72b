"""The one place where a recipe's sections become stages, and an optional ``stages:`` list orders them.

Default order: ``channels``, ``prune``, ``regularizer``, ``channel_regularizer``, ``regrow``,
``splice``, ``rewind``, ``qat`` (each present when its section is; ``qat`` from ``quantization.qat``).
A ``stages:`` list names every stage of the run in order: section stages by those names, other
stages by their registered name, with options as ``{type: name, option: value}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pruneaware.core.context import Context
from pruneaware.core.registry import STAGES
from pruneaware.core.stage import Stage
from pruneaware.distributed.fsdp import adapt_stages, mask_set_for
from pruneaware.core.errors import ConfigError
from pruneaware.recipe import Recipe
from pruneaware.stages import ChannelRegularization, ChannelRemoval, MaskUpdate, Regrowth, Regularization, Rewinding, Splicing
from pruneaware.quantization.stage import QuantizationAwareTraining
from pruneaware.stages.prune import keep_pruned

SECTION_STAGES = ("channels", "prune", "regularizer", "channel_regularizer", "regrow", "splice", "rewind", "qat")


def section_stages(recipe: Recipe, ctx: Context) -> dict[str, Stage]:
    """The stages the recipe's sections describe, by name, in the default order."""
    stages: dict[str, Stage] = {}
    splice = None
    if recipe.structured is not None:
        channels = stages["channels"] = ChannelRemoval(recipe, ctx)
    spec = recipe.pruning
    if spec is not None:
        schedule = spec.schedule.build(ctx.length)
        splice = spec.splice.build() if spec.splice else None
        rule = splice.masks if splice is not None else keep_pruned
        stages["prune"] = MaskUpdate(schedule, spec.build_criterion(), spec.granularity.build(), rule)
    if recipe.regularizer is not None:
        stages["regularizer"] = Regularization(recipe.regularizer.build(ctx.length))
    if recipe.structured is not None and recipe.structured.regularizer is not None:
        stages["channel_regularizer"] = ChannelRegularization(recipe.structured.regularizer.build(channels.channels))
    if spec is not None and spec.regrow is not None:
        stages["regrow"] = Regrowth(spec.regrow.build(schedule), schedule)
    if splice is not None:
        stages["splice"] = Splicing(splice, schedule)
    if spec is not None and spec.rewind is not None:
        stages["rewind"] = Rewinding(spec.rewind.build(ctx.module, schedule, spec.schedule.unit, ctx.length))
    if recipe.quantization is not None and recipe.quantization.qat_enabled:
        stages["qat"] = QuantizationAwareTraining(recipe.quantization.qat)
    return stages


def compose(recipe: Recipe, ctx: Context) -> list[Stage]:
    """The run's stages in order: the sections' (default order), or as the recipe's ``stages:`` list orders them."""
    built = section_stages(recipe, ctx)
    if recipe.stages is None:
        return list(built.values())
    stages: list[Stage] = []
    for index, entry in enumerate(recipe.stages):
        name, options = (entry, {}) if isinstance(entry, str) else (entry["type"], {k: v for k, v in entry.items() if k != "type"})
        field = f"recipe.stages[{index}]"
        if name in built and not options:
            stages.append(built.pop(name))
        elif name in SECTION_STAGES:
            raise ConfigError(field, entry, f"{name!r} is built from its recipe section: add the section, and list the bare name here")
        elif name in STAGES:
            stages.append(_user_stage(name, options, field))
        else:
            raise ConfigError(field, name, sorted(set(SECTION_STAGES) | set(STAGES.names())))
    if built:
        raise ConfigError("recipe.stages", [getattr(s, "name", s) for s in stages], f"every stage of the recipe's sections, in order; add {sorted(built)}")
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ConfigError("recipe.stages", names, "each stage once (names must be unique: they key the checkpoint state)")
    return stages


def assemble(recipe: Recipe, ctx: Context) -> list[Stage]:
    """The run's stages on ``ctx``, each able to follow the others' structure changes, with the masks they share."""
    stages = ctx.stages = compose(recipe, ctx)
    changes_structure = any(stage.changes_structure for stage in stages)
    for stage in stages:
        if changes_structure and not stage.follows_structure:
            raise stage.cannot_follow_structure()
    ctx.masks = mask_set_for(recipe.scope.build(), ctx.module, keep_zeros=not changes_structure)  # names as in the bare model
    ctx.stages = adapt_stages(stages, ctx)  # on fully_shard's shards: the stages that run there, or a refusal
    return list(ctx.stages)


def _user_stage(name: str, options: dict[str, Any], field: str) -> Stage:
    try:
        stage = STAGES.get(name)(**options)
    except TypeError as error:
        raise ConfigError(field, options, f"options stage {name!r} accepts ({error})") from None
    if not isinstance(stage, Stage):
        raise ConfigError(field, type(stage).__name__, f"a pruneaware.core.Stage from the factory registered as {name!r}")
    if stage.name == Stage.name:
        stage.name = name
    return stage


def as_recipe(recipe: Recipe | Mapping[str, Any] | str | Path) -> Recipe:
    """A Recipe from any accepted form; a bare name is a shipped recipe (``"default"``), as the callbacks accept."""
    from pruneaware.recipe.shipped import resolve_recipe

    if not isinstance(recipe, (Recipe, Mapping, str, Path)):
        raise ConfigError("recipe", type(recipe).__name__, "a Recipe, a dict, a shipped recipe's name, or the path of a YAML recipe")
    return resolve_recipe(recipe)
