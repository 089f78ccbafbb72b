"""Prune the built-in 1-D CNN on MNIST-1D inside PyTorch Lightning, with one callback.

Trains a dense baseline and a pruned copy from the same initial weights, the same way (Adam,
cosine learning rate, batch 100), and prints test accuracy and sparsity for both.

    python examples/lightning_mnist1d.py                       # shipped "default" recipe: GMP to 90%
    python examples/lightning_mnist1d.py --recipe structured   # channels removed during training
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import pytorch_lightning as pl
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import pruneaware as pa
from pruneaware.data import load_dataset
from pruneaware.models import build_model

warnings.filterwarnings("ignore", ".*does not have many workers.*")


class Classifier(pl.LightningModule):
    """Any classifier as a LightningModule: cross-entropy, Adam with a cosine learning rate over the whole run."""

    def __init__(self, net: torch.nn.Module, lr: float):
        super().__init__()
        self.net, self.lr = net, lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return F.cross_entropy(self(inputs), targets)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        total = self.trainer.estimated_stepping_batches
        cosine = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0))))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


@torch.no_grad()
def accuracy(module: torch.nn.Module, data: TensorDataset) -> float:
    module.eval()
    inputs, targets = data.tensors
    return float((module(inputs).argmax(1) == targets).float().mean())


def train(data, recipe: str | None, epochs: int, seed: int) -> tuple[Classifier, pa.integrations.PruningCallback | None, float]:
    torch.manual_seed(seed)  # the same initial weights for both runs
    module = Classifier(build_model("cnn1d", data.input_shape, data.num_classes), lr=0.01)
    callback = pa.integrations.PruningCallback(recipe) if recipe else None
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback] if callback else [],
    )
    loader = DataLoader(data.train, batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(seed))
    started = time.perf_counter()
    trainer.fit(module, loader)
    return module, callback, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="default", help="shipped recipe name or YAML path (default: 'default')")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a model this small gains nothing from more)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as `pruneaware run`: denormal Adam moments slow CPU training up to 2x
    data = load_dataset("mnist1d", seed=args.seed)

    dense, _, dense_seconds = train(data, None, args.epochs, args.seed)
    pruned, callback, pruned_seconds = train(data, args.recipe, args.epochs, args.seed)
    summary = callback.pruner.summary()
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    nonzero = lambda module: sum(int(torch.count_nonzero(p)) for p in module.parameters())  # noqa: E731
    print(f"recipe {args.recipe!r}, {args.epochs} epochs, seed {args.seed}, torch {torch.__version__}, {args.threads} threads")
    print(f"{'':<10}{'test acc':>10}{'params':>10}{'nonzero':>10}{'seconds':>10}")
    print(f"{'dense':<10}{accuracy(dense, data.test):>10.2%}{count(dense):>10,}{nonzero(dense):>10,}{dense_seconds:>10.1f}")
    print(f"{'pruned':<10}{accuracy(pruned, data.test):>10.2%}{count(pruned):>10,}{nonzero(pruned):>10,}{pruned_seconds:>10.1f}")
    print(f"sparsity of the pruned layers, counted from the weights: {summary.sparsity:.2%}; parameters kept: {count(pruned) / count(dense):.3f}x")


if __name__ == "__main__":
    main()
