"""The Lightning callback: masks and schedule inside Trainer.fit, resume from a Lightning checkpoint, structured removal."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import pruneaware as pa
from pruneaware.core.errors import ConfigError, StateError
from tests.helpers import ThreeLayerMLP

pl = pytest.importorskip("pytorch_lightning")
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")

SAMPLES, BATCH, EPOCHS = 64, 8, 4  # 8 steps an epoch, 32 in all
GMP = {
    "name": "gmp",
    "pruning": {"criterion": "magnitude", "schedule": {"type": "cubic", "final": 0.8, "begin": 0.0, "end": 0.75, "every": 0.125}},
}


class Classifier(pl.LightningModule):
    """The shared three-layer MLP as a LightningModule (SGD with momentum, plain cross-entropy)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = ThreeLayerMLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return F.cross_entropy(self(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(SAMPLES, 20, generator=generator), torch.randint(0, 4, (SAMPLES,), generator=generator))
    return DataLoader(data, batch_size=BATCH, shuffle=False)


def trainer(callbacks: list, **options: object) -> pl.Trainer:
    settings = dict(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, deterministic=True,
    )
    return pl.Trainer(callbacks=callbacks, **{**settings, **options})


class StopAfterEpoch(pl.Callback):
    """Ends fit at the end of epoch ``epoch`` (0-based), as an interruption would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def masks_of(callback: pa.integrations.PruningCallback) -> dict[str, torch.Tensor]:
    return {name: mask.clone() for name, mask in callback.pruner.masks.masks.items()}


def test_masks_and_final_sparsity_inside_fit():
    callback = pa.integrations.PruningCallback(GMP)
    module = Classifier()
    trainer([callback]).fit(module, loader())
    pruner = callback.pruner
    assert pruner.step_count == SAMPLES // BATCH * EPOCHS
    assert pruner.summary().sparsity == pytest.approx(0.8, abs=2e-3)  # counted from the weights
    for name, param in pruner.params.items():
        assert torch.all(param[~pruner.masks[name]] == 0), name
    assert torch.count_nonzero(module.net.head.weight) == module.net.head.weight.numel()  # classifier kept dense
    assert not pruner._hooks.handles  # finalized when fit ended: detached from the optimizer


def test_schedule_counts_optimizer_steps_with_gradient_accumulation():
    callback = pa.integrations.PruningCallback(GMP)
    trainer([callback], accumulate_grad_batches=2).fit(Classifier(), loader())
    assert callback.pruner.length.total_steps == SAMPLES // BATCH * EPOCHS // 2
    assert callback.pruner.step_count == SAMPLES // BATCH * EPOCHS // 2
    assert callback.pruner.summary().sparsity == pytest.approx(0.8, abs=2e-3)


def test_resume_from_lightning_checkpoint_matches_uninterrupted_run(tmp_path: Path):
    whole = pa.integrations.PruningCallback(GMP)
    uninterrupted = Classifier()
    trainer([whole]).fit(uninterrupted, loader())

    first = pa.integrations.PruningCallback(GMP)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True)
    trainer([first, StopAfterEpoch(1), saver], enable_checkpointing=True).fit(Classifier(), loader())
    assert first.pruner.step_count == 16 and 0 < first.pruner.summary().sparsity < 0.8  # stopped mid-schedule
    checkpoint = tmp_path / "epoch=1-step=16.ckpt"
    assert "callbacks" in torch.load(checkpoint, weights_only=False)

    resumed_callback = pa.integrations.PruningCallback(GMP)
    resumed = Classifier(seed=123)  # different initial weights: everything must come from the checkpoint
    trainer([resumed_callback]).fit(resumed, loader(), ckpt_path=checkpoint)

    assert resumed_callback.pruner.step_count == whole.pruner.step_count
    expected, actual = masks_of(whole), masks_of(resumed_callback)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert resumed_callback.pruner.summary().sparsity == whole.pruner.summary().sparsity
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_without_pruner_state_is_refused(tmp_path: Path):
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True)
    trainer([StopAfterEpoch(0), saver], enable_checkpointing=True).fit(Classifier(), loader())
    with pytest.raises(StateError, match="holds no pruner state"):
        trainer([pa.integrations.PruningCallback(GMP)]).fit(Classifier(), loader(), ckpt_path=tmp_path / "epoch=0-step=8.ckpt")


def test_movement_through_lightning_closure_matches_a_plain_loop():
    """Lightning steps with a closure; the criterion must read the gradients that closure computes."""
    recipe = pa.Recipe.from_dict({"pruning": {"criterion": "movement", "schedule": {"type": "linear", "final": 0.6, "begin": 0.25, "end": 0.75, "every": 0.25}}})
    callback = pa.integrations.PruningCallback(recipe)
    module = Classifier()
    reference = copy.deepcopy(module)
    trainer([callback], max_epochs=2).fit(module, loader())

    optimizer = reference.configure_optimizers()
    pruner = pa.Pruner(reference, optimizer, recipe, steps_per_epoch=SAMPLES // BATCH, epochs=2)
    for _ in range(2):
        for inputs, targets in loader():
            loss = F.cross_entropy(reference(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    pruner.finalize()
    for name, mask in pruner.masks.masks.items():
        assert torch.equal(mask, callback.pruner.masks[name]), name
    torch.testing.assert_close(module.state_dict(), reference.state_dict(), rtol=0, atol=0)


def test_regularizer_gradient_is_added_like_loss_plus_penalty():
    recipe = pa.Recipe.from_dict({"regularizer": {"type": "l1", "strength": 1e-3}})
    callback = pa.integrations.PruningCallback(recipe)
    module = Classifier()
    reference = copy.deepcopy(module)
    trainer([callback], max_epochs=1).fit(module, loader())

    optimizer = reference.configure_optimizers()
    pruner = pa.Pruner(reference, optimizer, recipe, steps_per_epoch=SAMPLES // BATCH, epochs=1)
    for inputs, targets in loader():
        loss = F.cross_entropy(reference(inputs), targets) + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    plain = Classifier()
    trainer([], max_epochs=1).fit(plain, loader())
    torch.testing.assert_close(module.state_dict(), reference.state_dict(), rtol=1e-6, atol=1e-7)
    assert not torch.allclose(module.net.fc1.weight, plain.net.fc1.weight, rtol=1e-4, atol=1e-6)  # the penalty did something


STRUCTURED = {"name": "channels", "structured": {"schedule": {"type": "linear", "initial": 0.25, "final": 0.5, "begin": 0.25, "end": 0.5, "every": 0.25}}}


def test_structured_recipe_shrinks_the_module_and_training_continues():
    callback = pa.integrations.PruningCallback(STRUCTURED)
    module = Classifier()
    dense = {name: p.shape for name, p in module.named_parameters()}
    fit = trainer([callback])
    fit.fit(module, loader())
    assert module.net.fc1.out_features < 32 and module.net.fc2.out_features < 40
    assert module.net.fc1.weight.shape[0] == module.net.fc2.weight.shape[1]
    assert module.net.head.out_features == 4  # the classifier keeps its outputs
    assert sum(p.numel() for p in module.parameters()) < sum(torch.Size(s).numel() for s in dense.values())
    in_optimizer = {id(p) for group in fit.optimizers[0].param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in module.parameters()}  # Lightning's optimizer holds the new parameters
    assert callback.pruner.step_count == SAMPLES // BATCH * EPOCHS
    assert torch.isfinite(module(torch.randn(3, 20))).all()


def test_structured_resume_replays_removals_before_the_weights_load(tmp_path: Path):
    whole = pa.integrations.PruningCallback(STRUCTURED)
    uninterrupted = Classifier()
    trainer([whole]).fit(uninterrupted, loader())

    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True)
    trainer([pa.integrations.PruningCallback(STRUCTURED), StopAfterEpoch(1), saver], enable_checkpointing=True).fit(Classifier(), loader())
    resumed = Classifier(seed=5)
    trainer([pa.integrations.PruningCallback(STRUCTURED)]).fit(resumed, loader(), ckpt_path=tmp_path / "epoch=1-step=16.ckpt")
    assert resumed.net.fc1.out_features == uninterrupted.net.fc1.out_features
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_recipes_fail_when_the_callback_is_built():
    with pytest.raises(ConfigError, match="default"):
        pa.integrations.PruningCallback("no_such_recipe")
    with pytest.raises(ConfigError, match="final"):
        pa.integrations.PruningCallback({"pruning": {"schedule": {"type": "cubic", "final": 1.5}}})
    with pytest.raises(ConfigError, match="recipe"):
        pa.integrations.PruningCallback(42)


def test_importing_pruneaware_does_not_import_lightning_or_transformers():
    import subprocess
    import sys

    code = "import sys, pruneaware; print(any(m.split('.')[0] in ('lightning', 'pytorch_lightning', 'transformers') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
