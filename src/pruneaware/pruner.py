"""The Pruner: plugs a recipe into any training loop through the optimizer's step hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pruneaware.distributed.ddp import rewrap_ddp
from pruneaware.distributed.sync import RankZeroSync, resolve_sync
from pruneaware.errors import ConfigError, StateError, UsageError
from pruneaware.masks import MaskSet
from pruneaware.optimizer_hooks import LearningRates, attach_step_hooks
from pruneaware.probing.calibration import Calibration, LossFn
from pruneaware.regrow import Regrow, start_at_zero_
from pruneaware.rewind import Rewind
from pruneaware.schedules import Schedule, geometric_targets
from pruneaware.scope import last_module_of_type, modules_matching
from pruneaware.splice import Splice
from pruneaware.structured.channels import ChannelPruner
from pruneaware.structured.graph import unwrap_model
from pruneaware.structured.support import check_supported
from pruneaware.structured.surgery import ParameterRemap, remap_optimizer
from pruneaware.recipe import Recipe, TrainingLength
from pruneaware.summary import Summary, summarize

log = logging.getLogger(__name__)
STATE_FORMAT = 1


class Pruner:
    """Runs a recipe inside training: schedule, scoring, masks and regularizer, advanced every step.

    With an optimizer, the pruner registers a pre-step hook (criteria observe gradients, pruned
    gradients are zeroed) and a post-step hook (regularizer update, schedule advance, masks
    re-applied), so ``optimizer.step()`` is all a loop calls. Without one, call ``pruner.step()``
    after each optimizer step yourself (and ``pruner.before_step()`` before it when the criterion
    reads gradients).

    Criteria that probe the model at an update (``snip``, ``grasp``, ``obd``) read the first
    batches of ``calibration_data`` (``(inputs, targets)`` pairs, e.g. the training loader) and
    score ``loss_fn(model(inputs), targets)``; ``synflow`` needs only ``example_inputs``.

    In a process group of more than one rank (``sync='auto'``), every rank adopts rank 0's masks
    and channel choices at each pruning step (see ``pruneaware.distributed``), and a
    DistributedDataParallel wrapper passed as ``model`` is rebuilt after channel removal: forward
    through ``pruner.model``.

    Example::

        pruner = Pruner(model, optimizer, "recipe.yaml", steps_per_epoch=len(loader), epochs=10)
        for epoch in range(10):
            for x, y in loader:
                loss = loss_fn(model(x), y) + pruner.penalty()
                optimizer.zero_grad(); loss.backward(); optimizer.step()
        pruner.finalize()
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        recipe: Recipe | Mapping[str, Any] | str | Path,
        *,
        steps_per_epoch: int | None = None,
        epochs: int | None = None,
        total_steps: int | None = None,
        example_inputs: Any = None,
        calibration_data: Iterable[tuple[Any, Any]] | None = None,
        loss_fn: LossFn | None = None,
        sync: RankZeroSync | str | None = "auto",
    ):
        self.model = model
        self.sync = resolve_sync(sync)
        self._structure_callbacks: list[Callable[[list[ParameterRemap]], None]] = []
        self.optimizer = optimizer
        self.recipe = _as_recipe(recipe)
        if total_steps is None and steps_per_epoch and epochs:
            total_steps = steps_per_epoch * epochs
        self.length = TrainingLength(steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        self.step_count = 0
        self.calibration = Calibration(calibration_data, loss_fn, example_inputs)  # for criteria that probe the model (SNIP, GraSP, SynFlow, OBD)
        self.channels = self._build_channel_pruner(example_inputs) if self.recipe.structured else None
        scope = self.recipe.scope.build().select(unwrap_model(model))  # names as in the bare model, also under DDP
        self.masks = MaskSet(scope, keep_zeros=self.recipe.structured is None)
        self.schedule = self.criterion = self.granularity = None
        if self.recipe.pruning is not None:
            self.schedule = self.recipe.pruning.schedule.build(self.length)
            self.criterion = self.recipe.pruning.build_criterion()
            self.granularity = self.recipe.pruning.granularity.build()
            self._check_fits_training()
            for name, param in self.params.items():
                self.granularity.check(name, param)
        self.rewind, self.splice, self.regrow = self._build_lifecycle()
        self.regularizer = self.recipe.regularizer.build(self.length) if self.recipe.regularizer else None
        if self.regularizer is not None:
            self.regularizer.start(self.params)
            self._take_regularizer_masks()
        channel_regularizer = self.recipe.structured.regularizer if self.recipe.structured else None
        self.channel_regularizer = channel_regularizer.build(self.channels) if channel_regularizer else None
        self._learning_rates_of = LearningRates(optimizer, self.params) if optimizer is not None else None
        self._hooks = attach_step_hooks(optimizer, self._before_step, self._after_step) if optimizer is not None else []
        if self.channels is not None:
            self._update_channels()
        if self.schedule is not None and self.schedule.is_update_step(0):
            self._prune(0)

    @property
    def params(self) -> dict[str, nn.Parameter]:
        """The parameters in the recipe's scope, by name (current objects, also after channel removal)."""
        return self.masks.params

    # -- the training-loop surface ------------------------------------------------------------

    def penalty(self) -> Tensor | float:
        """Regularizer terms to add to the loss (0.0 when the recipe has none or it is proximal)."""
        total = self.regularizer.penalty(self.params) if self.regularizer else 0.0
        if self.channel_regularizer is not None:
            total = total + self.channel_regularizer.penalty(self.step_count)
        return total

    def before_step(self) -> None:
        """Before an optimizer step: let the criterion read gradients, then zero pruned gradients."""
        self._refuse_if_hooked("before_step")
        self._before_step()

    def step(self) -> None:
        """After an optimizer step: regularizer update, schedule advance, masks enforced."""
        self._refuse_if_hooked("step")
        self._after_step()

    def _refuse_if_hooked(self, method: str) -> None:
        if self._hooks:
            raise UsageError(
                f"this pruner already runs through optimizer.step(); calling pruner.{method}() as well would "
                "advance it twice per step. Drive it by hand only with Pruner(model, None, recipe, ...)"
            )

    def _before_step(self) -> None:
        if self.criterion is not None and self.criterion.needs_gradients:
            self.criterion.observe(self.params)
        if self.channels is not None:
            self.channels.observe()
        if self.regularizer is not None:
            self.regularizer.before_step(self.params, self.masks)
        if self.regrow is not None and self.schedule.is_update_step(self.step_count + 1):
            self.regrow.capture(self.params)  # dense gradients for growth, read before pruned ones are zeroed
        if self._splicing():
            self.masks.restore_shadows_()  # pruned weights train on, with the straight-through gradient
        elif self.regularizer is None or not self.regularizer.straight_through:
            self.masks.mask_gradients_()

    def _after_step(self) -> None:
        if self.regularizer is not None:
            learning_rates = self._learning_rates()  # frozen parameters have none and are left alone
            self.regularizer.after_step({n: p for n, p in self.params.items() if n in learning_rates}, learning_rates)
            self._take_regularizer_masks()
        if self._splicing():
            self.masks.save_shadows_()  # before pruned weights are zeroed again
        self.step_count += 1
        if self.channels is not None:
            self._update_channels()
        if self.schedule is not None and self.schedule.is_update_step(self.step_count):
            self._prune(self.step_count)
        else:
            self.masks.apply_()
        if self.rewind is not None:
            self.rewind.snapshot_if_due(self.step_count)

    def target_sparsity(self) -> float:
        """The sparsity the schedule asks for now (0.0 for regularizer-only recipes)."""
        return self.schedule.target(self.step_count) if self.schedule else 0.0

    def summary(self) -> Summary:
        """Per-layer and total sparsity counted from the weights themselves."""
        return summarize(self.model, self.params, target=self.target_sparsity())

    def finalize(self) -> nn.Module:
        """Make the sparsity permanent: zero pruned weights one last time and detach from the optimizer.

        The model is an ordinary module before and after; it stays trainable (further training
        without a pruner is free to regrow zeros).
        """
        if self.regularizer is not None:
            self.regularizer.finalize(self.params)
            self._take_regularizer_masks()
        self.masks.apply_()
        self.remove_hooks()
        return self.model

    def on_structure_change(self, callback: Callable[[list[ParameterRemap]], None]) -> None:
        """Call ``callback(remaps)`` after each channel removal (parameters replaced), after the optimizer, masks and a DDP wrapper followed."""
        self._structure_callbacks.append(callback)

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    # -- checkpointing --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule bit-for-bit: step, masks, criterion state."""
        return {
            "format": STATE_FORMAT,
            "recipe": self.recipe.fingerprint(),
            "step": self.step_count,
            "masks": self.masks.state_dict(),
            "criterion": self.criterion.state_dict() if self.criterion else {},
            "rewind": self.rewind.state_dict() if self.rewind else None,
            "shadows": self.masks.shadow_state_dict() if self.splice else None,
            "regularizer": self.regularizer.state_dict() if self.regularizer else {},
            "structure": self.channels.state_dict() if self.channels else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict`` from the same recipe."""
        if state.get("format") != STATE_FORMAT:
            raise StateError(f"pruner state format {state.get('format')!r} is not {STATE_FORMAT}; was it saved by pruneaware?")
        if state["recipe"] != self.recipe.fingerprint():
            raise StateError(
                f"pruner state was saved with a different recipe (fingerprint {state['recipe']}, this recipe "
                f"{self.recipe.fingerprint()}); resume with the recipe the run started with"
            )
        self._replay_structure(state.get("structure"))
        self.masks.load_state_dict(state["masks"])  # validates first: a rejected state changes nothing
        if self.criterion is not None:
            self.criterion.load_state_dict(state["criterion"])
        if self.rewind is not None:
            self.rewind.load_state_dict(state["rewind"])
        if self.splice is not None:
            self.masks.load_shadow_state_dict(state["shadows"])
        if self.regularizer is not None:
            self.regularizer.load_state_dict(state.get("regularizer", {}))
        self.step_count = int(state["step"])

    def _replay_structure(self, structure: Mapping[str, Any] | None) -> None:
        """Repeat the saved channel removals on this (unpruned) model, so saved weights fit it."""
        if structure is None:
            return
        if self.channels is None:
            raise StateError("the state holds channel removals but this recipe has no 'structured' section")
        remaps = self.channels.load_state_dict(dict(structure))
        if self.optimizer is not None:
            remap_optimizer(self.optimizer, remaps)
        self.masks.remap(remaps)
        self._structure_changed(remaps)

    # -- internals ------------------------------------------------------------------------------

    def _prune(self, step: int) -> None:
        """Recompute masks at the schedule's target; pruned weights stay pruned (scores forced lowest) unless the recipe splices or regrows.

        A criterion with several ``rounds`` (SynFlow) gets there through exponentially spaced
        intermediate targets, re-scored after each.
        """
        target = self.schedule.value_at(step)
        for round_target in geometric_targets(self.masks.sparsity(), target, self.criterion.rounds):
            self._prune_to(round_target)
        if self.regrow is not None:
            self._regrow(step)
        if self.rewind is not None:
            self.rewind.rewind_(step, self.optimizer)
            self.masks.apply_()  # only the survivors keep their rewound values
        self.criterion.after_prune()
        log.debug("step %d: pruned to target %.4f (masked %.4f)", step, target, self.masks.sparsity())

    def _prune_to(self, target: float) -> None:
        """Score once (after letting the criterion probe the model) and cut to ``target``."""
        self.criterion.calibrate(unwrap_model(self.model), self.params, self.calibration)
        with torch.no_grad():
            scores = {}
            for name, param in self.params.items():
                scores[name] = self.criterion.score(name, param).float()
        if self.splice is not None:  # scored on the dense weights, pruned ones may come back
            self.masks.update(self._agreed(self.splice.masks(self.granularity, scores, self.masks.masks, target)))
            return
        kept = {name: score.masked_fill(~self.masks[name], float("-inf")) for name, score in scores.items()}
        new_masks = self.granularity.masks(kept, target)
        self.masks.update(self._agreed({name: mask & self.masks[name] for name, mask in new_masks.items()}))

    def _agreed(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rank 0's masks on every rank of a distributed run (ranks may score differently); as they are otherwise."""
        return self.sync.masks(masks, self.params) if self.sync is not None else dict(masks)

    @torch.no_grad()
    def _regrow(self, step: int) -> None:
        """RigL's drop-and-grow on the pruned masks; grown weights and their optimizer statistics start at zero."""
        old = dict(self.masks.masks)
        new_masks = self._agreed(self.regrow.swap(old, self.params, step))
        for name, mask in new_masks.items():
            start_at_zero_(self.params[name], mask & ~old[name], self.optimizer)
        self.masks.update(new_masks)

    def _splicing(self) -> bool:
        """Whether pruned weights still train (DNS): until the schedule's last mask update."""
        return self.splice is not None and self.step_count < self.schedule.last_step

    def _build_lifecycle(self) -> tuple[Rewind | None, Splice | None, Regrow | None]:
        """The method's rules around mask updates: rewinding (IMP), splicing (DNS) or regrowth (RigL)."""
        spec = self.recipe.pruning
        if spec is None:
            return None, None, None
        rewind = spec.rewind.build(unwrap_model(self.model), self.schedule, spec.schedule.unit, self.length) if spec.rewind else None
        if rewind is not None:
            if rewind.reset_optimizer and self.optimizer is None:
                raise UsageError(
                    "pruning.rewind.optimizer 'reset' restarts the optimizer's statistics at each rewind: pass the optimizer "
                    "to Pruner, or set optimizer: keep and clear them yourself (optimizer.state.clear())"
                )
            rewind.snapshot_if_due(0)
        splice = spec.splice.build() if spec.splice else None
        if splice is not None:
            self.masks.keep_shadows()
        return rewind, splice, spec.regrow.build(self.schedule) if spec.regrow else None

    def _take_regularizer_masks(self) -> None:
        """Install the masks a reparametrizing regularizer (L0, SR-STE) decided, if any."""
        masks = self.regularizer.keep_masks(self.masks)
        if masks is not None:
            self.masks.update(masks)

    def _update_channels(self) -> None:
        """Let the channel pruner act at this step; keep the optimizer and masks pointing at any new parameters."""
        remaps = self.channels.update(self.step_count)
        if not remaps:
            return
        if self.optimizer is not None:
            remap_optimizer(self.optimizer, remaps)
        self.masks.remap(remaps)
        self._structure_changed(remaps)
        log.debug("step %d: removed channels, %d parameters replaced", self.step_count, len(remaps))

    def _structure_changed(self, remaps: list[ParameterRemap]) -> None:
        """After a removal: a DDP wrapper is rebuilt (its buckets held the replaced parameters), then callbacks run."""
        if isinstance(self.model, DistributedDataParallel):
            self.model = rewrap_ddp(self.model)
        for callback in self._structure_callbacks:
            callback(remaps)

    def _build_channel_pruner(self, example_inputs: Any) -> ChannelPruner:
        spec = self.recipe.structured
        if example_inputs is None:
            raise ConfigError("example_inputs", None, "a batch of example inputs: structured pruning traces the model with it")
        schedule = spec.schedule.build(self.length)
        self._check_fits_training(schedule)
        remove_step = spec.removal_step(self.length)
        total = self.length.total_steps
        if remove_step is not None and total is not None and remove_step > total:
            raise ConfigError("structured.remove_at", f"step {remove_step}", f"a step by the end of training ({total})")
        module = unwrap_model(self.model)
        ignored = modules_matching(module, spec.ignore)
        classifier = last_module_of_type(module, self.recipe.scope.modules) if self.recipe.scope.skip_last else None
        check_supported(module, example_inputs, ignored + ([classifier] if classifier is not None else []))
        channels = ChannelPruner(
            module,
            example_inputs,
            schedule,
            importance=spec.importance,
            allocation=spec.allocation,
            ignored=ignored + ([classifier] if classifier is not None else []),
            max_layer_ratio=spec.max_layer_ratio,
            round_to=spec.round_to,
            phase=spec.phase,
            remove_step=remove_step,
            target=spec.target.build() if spec.target is not None else None,
            heads=spec.heads,
            sync=self.sync,
        )
        return channels

    def _check_fits_training(self, schedule: Schedule | None = None) -> None:
        schedule = schedule or self.schedule
        total = self.length.total_steps
        if total is not None and schedule.last_step > total:
            raise ConfigError(
                "pruning.schedule",
                f"last update at step {schedule.last_step}",
                f"a schedule that ends by the last training step ({total}); move 'end'/'at' earlier or train longer",
            )

    def _learning_rates(self) -> dict[str, float]:
        if self._learning_rates_of is None:
            raise UsageError("a proximal regularizer needs the optimizer's learning rate; pass the optimizer to Pruner")
        return self._learning_rates_of.current()


def _as_recipe(recipe: Recipe | Mapping[str, Any] | str | Path) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, Mapping):
        return Recipe.from_dict(dict(recipe))
    if isinstance(recipe, (str, Path)):
        return Recipe.from_yaml(recipe)
    raise ConfigError("recipe", type(recipe).__name__, "a Recipe, a dict, or the path of a YAML recipe")
