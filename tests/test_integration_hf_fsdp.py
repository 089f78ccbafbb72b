"""The Hugging Face Trainer callback and FSDP on 2 gloo ranks: what accelerate does on CPU, and the callback's FSDP2 checkpoints.

accelerate applies its FSDP plugin only to multi-process runs on GPUs and other accelerators: on
CPU the Trainer trains with DDP and the callback says so. The callback's own handling of a
``fully_shard`` model (gathered checkpoint, re-sharded resume) is driven here through its hooks.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

import pruneaware as pa
from pruneaware.core.masks import MaskSet
from pruneaware.distributed.fsdp_masks import ShardedMaskSet
from tests.fsdp_helpers import GMP, Tiny, full_digests, rank_results, run_ranks, sharded_tiny, train_steps, write_result

transformers = pytest.importorskip("transformers")
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments  # imported once here, not in every forked rank
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")


class Regressor(nn.Module):
    """Tiny returning the loss as Trainer expects."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = Tiny()

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {"loss": F.mse_loss(out, labels), "logits": out}


class Pairs(Dataset):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(32, 8, generator=generator), torch.randn(32, 3, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "labels": self.y[index]}


def _trainer_with_fsdp_config(folder: str) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # accelerate asks for it; the ranks' process group already exists
    args = TrainingArguments(
        output_dir=folder, per_device_train_batch_size=4, num_train_epochs=1, learning_rate=0.05, use_cpu=True, ddp_backend="gloo",
        report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
        fsdp=True, fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["Block"]},
    )
    callback = pa.integrations.HFPruningCallback(GMP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(model=Regressor(), args=args, train_dataset=Pairs(), callbacks=[callback])
        trainer.train()
    pruner = callback.pruner
    write_result(folder, {
        "fsdp": trainer.is_fsdp_enabled, "distributed": str(trainer.accelerator.distributed_type),
        "whole_masks": type(pruner.masks) is MaskSet, "sparsity": pruner.masks.sparsity(),
        "warned": any("accelerate did not shard the model" in str(w.message) for w in caught),
        "masks": full_digests(pruner.masks.state_dict()),
    })


def test_on_cpu_accelerate_trains_an_fsdp_config_with_ddp_and_the_callback_says_so(tmp_path: Path) -> None:
    run_ranks(_trainer_with_fsdp_config, str(tmp_path))
    ranks = rank_results(tmp_path)
    for rank in ranks:
        assert not rank["fsdp"] and rank["distributed"] == "DistributedType.MULTI_CPU", "accelerate now shards on CPU: test the sharded path here"
        assert rank["whole_masks"] and rank["warned"]
        assert rank["sparsity"] == pytest.approx(0.8, abs=2e-3)
    assert ranks[0]["masks"] == ranks[1]["masks"]


def _hooks(folder: str) -> None:
    """What Trainer does around the callback under accelerate's FSDP2: build at train begin, save at step 6, resume at step 6."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    args = TrainingArguments(output_dir=folder, per_device_train_batch_size=4, use_cpu=True, report_to=[])
    loader = DataLoader(TensorDataset(torch.randn(16, 8), torch.randn(16, 3)), batch_size=4)
    control = TrainerControl()

    def begin(step: int) -> tuple[pa.integrations.HFPruningCallback, nn.Module, torch.optim.Optimizer]:
        model = sharded_tiny()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        state = TrainerState(global_step=step, max_steps=12)
        callback = pa.integrations.HFPruningCallback(GMP)
        callback.on_train_begin(args, state, control, model=model, optimizer=optimizer, train_dataloader=loader)
        return callback, model, optimizer

    callback, model, optimizer = begin(0)
    train_steps(model, optimizer, range(6))
    state = TrainerState(global_step=6, max_steps=12)
    state.is_world_process_zero = dist.get_rank() == 0
    Path(folder, "checkpoint-6").mkdir(exist_ok=True)
    dist.barrier()
    callback.on_save(args, state, control)
    dist.barrier()
    saved = torch.load(Path(folder, "checkpoint-6", "pruneaware_pruner.pt"), weights_only=True)
    resumed, _, _ = begin(6)
    write_result(folder, {
        "sharded": isinstance(callback.pruner.masks, ShardedMaskSet),
        "sparsity": callback.pruner.masks.sparsity(),
        "saved_shape": list(saved["masks"]["blocks.0.up.weight"].shape) if "masks" in saved else None,
        "masks": full_digests(callback.pruner.masks.state_dict()),
        "resumed": full_digests(resumed.pruner.masks.state_dict()),
        "steps": [callback.pruner.step_count, resumed.pruner.step_count],
    })


def test_the_callback_saves_fsdp2_masks_whole_and_each_rank_resumes_its_own_shards(tmp_path: Path) -> None:
    run_ranks(_hooks, str(tmp_path))
    ranks = rank_results(tmp_path)
    for rank in ranks:
        assert rank["sharded"] and 0.3 < rank["sparsity"] < 0.8  # mid-schedule
        assert rank["saved_shape"] == [18, 16]  # the whole mask, not rank 0's 9 rows
        assert rank["resumed"] == rank["masks"] and rank["steps"] == [6, 6]
    assert ranks[0]["masks"] == ranks[1]["masks"]
