"""The Lightning callback when Lightning shards with FSDP2 (ModelParallelStrategy, fully_shard in configure_model) on 2 gloo ranks.

Each rank runs Lightning inside a forked process group (Lightning joins it instead of launching
processes), writes what it saw as JSON, and the assertions run here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import pruneaware as pa
from pruneaware.distributed.fsdp_masks import ShardedMaskSet
from tests.fsdp_helpers import GMP, Tiny, full, full_digests, rank_results, run_ranks, write_result

pl = pytest.importorskip("pytorch_lightning")
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
EPOCHS = 2  # 64 samples, 8 a step, over 2 ranks: 4 optimizer steps an epoch


class Sharded(pl.LightningModule):
    """Tiny with fully_shard per block and at the root, applied on Lightning's data-parallel mesh."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = Tiny()

    def configure_model(self) -> None:
        mesh = self.device_mesh["data_parallel"]
        for block in self.net.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return F.mse_loss(self.net(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = trainer.current_epoch == 0


def fit(callbacks: list, ckpt_path: str | None = None, save: str | None = None) -> Sharded:
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(64, 8, generator=generator), torch.randn(64, 3, generator=generator))
    module = Sharded()
    strategy = pl.strategies.ModelParallelStrategy(data_parallel_size=dist.get_world_size(), tensor_parallel_size=1)
    trainer = pl.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=dist.get_world_size(), strategy=strategy, callbacks=callbacks,
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(data, batch_size=8), ckpt_path=ckpt_path)
        if save is not None:
            trainer.save_checkpoint(save)
    return module


def _summary(callback: pa.integrations.PruningCallback, module: Sharded) -> dict[str, object]:
    pruner = callback.pruner
    weights = dict(module.named_parameters())
    masks = {name: full(mask) for name, mask in pruner.masks.state_dict().items()}
    return {
        "sharded": isinstance(pruner.masks, ShardedMaskSet),
        "local_rows": pruner.masks.masks["net.blocks.0.up.weight"].shape[0],
        "sparsity": pruner.masks.sparsity(),
        "steps": pruner.step_count,
        "pruned_nonzero": sum(int(torch.count_nonzero(full(weights[name].detach())[~mask])) for name, mask in masks.items()),
        "masks": full_digests(pruner.masks.state_dict()),
        "weights": full_digests(weights),
    }


def _fit(folder: str) -> None:
    callback = pa.integrations.PruningCallback(GMP)
    write_result(folder, _summary(callback, fit([callback])))


def _fit_interrupt_resume(folder: str) -> None:
    whole = pa.integrations.PruningCallback(GMP)
    uninterrupted = _summary(whole, fit([whole]))
    interrupted = pa.integrations.PruningCallback(GMP)
    fit([interrupted, StopAfterFirstEpoch()], save=f"{folder}/ckpt")
    resumed = pa.integrations.PruningCallback(GMP)
    write_result(folder, {"uninterrupted": uninterrupted, "stopped_at": interrupted.pruner.step_count, "resumed": _summary(resumed, fit([resumed], ckpt_path=f"{folder}/ckpt"))})


def check_run(ranks: list[dict]) -> None:
    for rank in ranks:
        assert rank["sharded"] and rank["local_rows"] == 9  # 18 rows over 2 ranks: masks live on the shards
        assert rank["sparsity"] == pytest.approx(0.8, abs=2e-3) and rank["steps"] == 8
        assert rank["pruned_nonzero"] == 0
    assert ranks[0]["masks"] == ranks[1]["masks"] and ranks[0]["weights"] == ranks[1]["weights"]


def test_lightning_fsdp2_prunes_on_the_shards_and_ranks_agree(tmp_path: Path) -> None:
    run_ranks(_fit, str(tmp_path))
    check_run(rank_results(tmp_path))


@pytest.mark.slow
def test_lightning_fsdp2_resumes_from_its_checkpoint_bit_exactly(tmp_path: Path) -> None:
    """Lightning writes the callback state with torch.save on rank 0: the masks are gathered whole, and each rank cuts its shards back out."""
    run_ranks(_fit_interrupt_resume, str(tmp_path))
    ranks = rank_results(tmp_path)
    check_run([rank["resumed"] for rank in ranks])
    for rank in ranks:
        assert rank["stopped_at"] == 4
        assert rank["resumed"]["masks"] == rank["uninterrupted"]["masks"] and rank["resumed"]["weights"] == rank["uninterrupted"]["weights"]


def test_lightning_fsdp_strategy_is_refused_on_cpu_by_lightning_itself() -> None:
    """Why FSDPStrategy (FSDP1) is not tested here; on a GPU the Pruner refuses FSDP1 by name (tests/test_fsdp.py)."""
    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        pl.Trainer(accelerator="cpu", devices=2, strategy="fsdp", logger=False)
