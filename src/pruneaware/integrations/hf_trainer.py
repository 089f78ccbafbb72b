"""Hugging Face ``transformers``: a recipe runs inside ``Trainer.train``; the pruner's state sits in every checkpoint folder.

``Trainer(model, args, ..., callbacks=[PruningCallback(recipe)])`` is all it takes;
``trainer.train(resume_from_checkpoint=...)`` continues the schedule where the checkpoint left it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneaware.core.errors import StateError, UsageError
from pruneaware.integrations.deferred import DeferredWeights
from pruneaware.integrations.sharded_state import gather, has_shards, reshard
from pruneaware.recipe.shipped import resolve_recipe
from pruneaware.integrations.training import backward_penalty, sample_batch
from pruneaware.job import checkpoint
from pruneaware.core.driver import Pruner
from pruneaware.recipe import Recipe

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
    from transformers.utils import find_labels
except ImportError:
    raise UsageError("the Trainer callback needs Hugging Face transformers: pip install transformers accelerate") from None

STATE_FILE = "pruneaware_pruner.pt"
"""Name of the pruner's state in each ``checkpoint-<step>`` folder."""


class PruningCallback(TrainerCallback):
    """Prunes the Trainer's model while ``Trainer.train`` trains it, as ``recipe`` says.

    The pruner is built when training begins, over the model and the Trainer's optimizer (the
    torch optimizer inside Accelerate's wrapper), with the schedule spanning ``state.max_steps``
    optimizer steps. It advances through the optimizer's step hooks, adds the gradient of the
    recipe's regularizer term before every step, writes its state into every ``checkpoint-<step>``
    folder the Trainer saves, and reads it back when ``train(resume_from_checkpoint=...)`` resumes
    (channel removals replayed, the slimmer weights and optimizer state put back). When training
    ends the sparsity is made permanent (``Pruner.finalize``).

    ``example_inputs`` (structured recipes trace the model) defaults to the first training batch
    without its labels; criteria that score on data (``snip``, ``grasp``, ``obd``) use the loss the
    model computes on that batch.
    """

    def __init__(self, recipe: Recipe | Mapping[str, Any] | str | Path, *, example_inputs: Any = None):
        self.recipe = resolve_recipe(recipe)
        self.example_inputs = example_inputs
        self._pruner: Pruner | None = None
        self._deferred: DeferredWeights | None = None

    @property
    def pruner(self) -> Pruner:
        """The running pruner (built when ``Trainer.train`` begins)."""
        if self._pruner is None:
            raise UsageError("the pruner is built when Trainer.train begins; read callback.pruner during or after training")
        return self._pruner

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: nn.Module | None = None, **kwargs: Any) -> None:
        if self.recipe.structured is not None and model is not None:
            self._deferred = DeferredWeights(model)  # the Trainer loads a resumed checkpoint before train begins

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        optimizer: Any = None,
        train_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        if args.fp16 and _has_penalty(self.recipe):
            raise UsageError("a regularizer's gradient cannot be added to fp16-scaled gradients; train in bf16 or fp32")
        torch_optimizer = _torch_optimizer(optimizer)
        batch = sample_batch(train_dataloader, _device(model), size=args.per_device_train_batch_size)
        resuming = state.global_step > 0
        saved_optimizer = None
        if resuming and self.recipe.structured is not None:
            saved_optimizer = torch_optimizer.state_dict()  # loaded slim; put back once the removals are replayed
            torch_optimizer.state.clear()
        self._pruner = Pruner(
            model,
            torch_optimizer,
            self.recipe,
            steps_per_epoch=_optimizer_steps_per_epoch(train_dataloader, args.gradient_accumulation_steps),
            total_steps=state.max_steps,
            example_inputs=self.example_inputs if self.example_inputs is not None else _without_labels(batch, args, model),
            calibration_data=[(batch, None)] if isinstance(batch, Mapping) else None,
            loss_fn=lambda outputs, _: outputs.loss,
        )
        _warn_if_fsdp_was_dropped(args, model)
        if resuming:
            saved, template = checkpoint.load(_state_path(args, state, must_exist=True)), self._pruner.state_dict()
            self._pruner.load_state_dict(reshard(saved, template) if has_shards(template) else saved)  # FSDP2: this rank's shards of the whole tensors
        if saved_optimizer is not None:
            torch_optimizer.load_state_dict(saved_optimizer)
        if self._deferred is not None:
            self._deferred.load_into(model)
            self._deferred = None

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._pruner is not None:
            backward_penalty(self._pruner)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._pruner is None:
            return
        pruner_state = self._pruner.state_dict()
        if has_shards(pruner_state):  # FSDP2 (accelerate's fully_shard): every rank saves, so every rank gathers its shards
            pruner_state = gather(pruner_state)
        if state.is_world_process_zero:
            checkpoint.atomic_save(pruner_state, _state_path(args, state, must_exist=False))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._pruner is not None:
            self._pruner.finalize()
        if self._deferred is not None:
            self._deferred.detach()
            self._deferred = None


def _state_path(args: TrainingArguments, state: TrainerState, *, must_exist: bool) -> Path:
    """The pruner state file in the Trainer's checkpoint folder of this step (``<output_dir>/checkpoint-<step>``)."""
    folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
    path = folder / STATE_FILE
    if must_exist and not path.is_file():
        raise StateError(
            f"training resumed at step {state.global_step}, but {str(path)!r} does not exist; resume from a checkpoint "
            f"folder in output_dir ({args.output_dir!r}) saved with this callback"
        )
    if not must_exist and not folder.is_dir():
        raise StateError(f"the Trainer saved no checkpoint folder {str(folder)!r}; hyperparameter-search run folders are not supported")
    return path


def _warn_if_fsdp_was_dropped(args: TrainingArguments, model: nn.Module) -> None:
    """Say so when the arguments ask for FSDP but the model was not sharded: accelerate applies its FSDP plugin only on accelerators, not on CPU."""
    from torch.distributed.tensor import DTensor

    if getattr(args, "fsdp_plugin_args", None) is None or any(isinstance(p, DTensor) for p in model.parameters()):
        return
    if any(type(module).__name__ == "FullyShardedDataParallel" for module in model.modules()):
        return  # FSDP1: the Pruner refuses it by itself
    warnings.warn(
        "TrainingArguments ask for FSDP, but accelerate did not shard the model (it attaches its FSDP plugin to multi-process "
        "GPU and other accelerator runs only, not on CPU, where the Trainer falls back to DDP): every rank holds the whole "
        "model, and the pruner keeps whole masks",
        stacklevel=2,
    )


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside Accelerate's (or any) wrapper: its step hooks are the ones that fire."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UsageError(f"the Trainer has no torch optimizer to prune with (got {type(optimizer).__name__})")
    return optimizer


def _optimizer_steps_per_epoch(dataloader: Any, accumulation: int) -> int | None:
    try:
        batches = len(dataloader)
    except TypeError:  # an iterable dataset without a length
        return None
    return max(math.ceil(batches / accumulation), 1)


def _without_labels(batch: Any, args: TrainingArguments, model: nn.Module) -> Any:
    if not isinstance(batch, Mapping):
        return batch
    labels = set(args.label_names or find_labels(type(model)))
    return {key: value for key, value in batch.items() if key not in labels}


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _has_penalty(recipe: Recipe) -> bool:
    return recipe.regularizer is not None or (recipe.structured is not None and recipe.structured.regularizer is not None)


__all__ = ["STATE_FILE", "PruningCallback"]
