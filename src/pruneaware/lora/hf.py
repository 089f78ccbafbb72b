"""Sparse LoRA inside the Hugging Face Trainer: ``Trainer(peft_model, ..., callbacks=[SparseLoRACallback()])``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pruneaware.core.errors import StateError, UsageError
from pruneaware.lora.sparse import SparseLoRA


class SparseLoRACallback(TrainerCallback):
    """Masks the adapters of the Trainer's PeftModel when training begins (``mode`` as in SparseLoRA) and checks the base stayed sparse at the end.

    After ``trainer.train()``, ``callback.merge()`` returns the merged model with the base's zeros.
    """

    def __init__(self, *, mode: str = "product", scope: Iterable[str] | None = None):
        self.mode, self.scope = mode, list(scope) if scope is not None else None
        self._lora: SparseLoRA | None = None

    @property
    def lora(self) -> SparseLoRA:
        if self._lora is None:
            raise UsageError("SparseLoRACallback.lora exists once training has begun; call trainer.train() first")
        return self._lora

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: nn.Module | None = None, **kwargs: Any) -> None:
        if self._lora is None:
            self._lora = SparseLoRA(model, mode=self.mode, scope=self.scope)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._lora is not None and self._lora.count_zeros() != self._lora.base_zeros:
            raise StateError("the pruned base weights changed during LoRA training; freeze them (peft does unless modules_to_save names them)")

    def merge(self) -> nn.Module:
        """The merged model, sparse as the base (see SparseLoRA.merge)."""
        return self.lora.merge()
