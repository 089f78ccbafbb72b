"""The job's model, data, task and device resolved from ``train:``, and checked against each other before training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruneaware.data.batches import head
from pruneaware.data.sources import load_data, with_targets
from pruneaware.data.splits import DatasetSplits
from pruneaware.core.errors import ConfigError
from pruneaware.job.device import select_device
from pruneaware.job.spec import TrainSpec
from pruneaware.job.task import Task, get_task
from pruneaware.models.huggingface import HFAdapter, is_model_folder, load_tokenizer
from pruneaware.models.sources import model_task, resolve_model
from pruneaware.models.weights import load_weights

CHECK_BATCH = 2


@dataclass(frozen=True)
class JobInputs:
    """Everything both phases share; ``build_model`` gives each phase the same initial weights."""

    spec: TrainSpec
    data: DatasetSplits
    task: Task
    device: torch.device

    def build_model(self) -> nn.Module:
        torch.manual_seed(self.spec.seed)  # same initial weights for both phases
        model = resolve_model(self.spec.model, dict(self.spec.model_options), task=self.task.name, input_shape=self.data.input_shape, num_classes=self.data.num_classes)
        if self.spec.weights is not None:
            load_weights(model.model if isinstance(model, HFAdapter) else model, self.spec.weights)
        return model.to(self.device)


def prepare_inputs(spec: TrainSpec) -> JobInputs:
    """Resolve the data and model of ``spec`` and run the model on one batch, so bad input fails before any training."""
    task = get_task(model_task(spec.model, spec.task))
    options = dict(spec.data_options)
    tokenizer_folder = options.pop("tokenizer", None) or (spec.model if is_model_folder(spec.model) else None)
    tokenizer = load_tokenizer(tokenizer_folder) if tokenizer_folder is not None else None
    data = load_data(spec.dataset, options, seed=spec.seed, task=task.name, tokenizer=tokenizer)
    inputs = JobInputs(spec, data, task, select_device(spec.device))
    model = inputs.build_model()
    if task.name == "embedding":  # the pruned encoder learns to keep the starting model's embeddings
        data = with_targets(data, (_embed(model, data.train, inputs), _embed(model, data.test, inputs)))
        inputs = JobInputs(spec, data, task, inputs.device)
    _check_fit(model, inputs)
    return inputs


def _check_fit(model: nn.Module, inputs: JobInputs) -> None:
    batch_inputs, targets = head(inputs.data.train, CHECK_BATCH)
    try:
        with torch.no_grad():
            outputs = model.eval()(batch_inputs.to(inputs.device))
    except Exception as error:  # the user's model may raise anything on data it does not fit
        raise ConfigError(
            "train.model", inputs.spec.model, f"a model that accepts the data's inputs (a batch of shape {list(batch_inputs.shape)}); it raised {type(error).__name__}: {error}"
        ) from None
    inputs.task.check_outputs(outputs, targets.to(inputs.device), inputs.data.num_classes, inputs.spec.model)


@torch.no_grad()
def _embed(model: nn.Module, dataset: torch.utils.data.TensorDataset, inputs: JobInputs) -> torch.Tensor:
    tokens = dataset.tensors[0]
    model.eval()
    parts = [model(tokens[start : start + inputs.spec.eval_batch_size].to(inputs.device)).float().cpu() for start in range(0, len(tokens), inputs.spec.eval_batch_size)]
    return torch.cat(parts)
