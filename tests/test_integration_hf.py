"""The Hugging Face Trainer callback on a tiny BERT built from a config: element, movement and head pruning, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pruneaware as pa
from pruneaware.core.errors import StateError

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from pruneaware.integrations.hf_trainer import STATE_FILE  # noqa: E402

SAMPLES, BATCH, EPOCHS = 32, 8, 3  # 4 steps an epoch, 12 in all
GMP = {"name": "gmp", "pruning": {"criterion": "magnitude", "schedule": {"type": "cubic", "final": 0.7, "begin": 0.0, "end": 0.75, "every": 0.25}}}
MOVEMENT = {"name": "movement", "pruning": {"criterion": "movement", "schedule": {"type": "cubic", "final": 0.6, "begin": 0.25, "end": 1.0, "every": 0.25}}}
HEADS = {"name": "heads", "structured": {"heads": True, "schedule": {"type": "linear", "initial": 0.25, "final": 0.5, "begin": 0.25, "end": 0.5, "every": 0.25}}}


class RandomTokens(torch.utils.data.Dataset):
    """Random token sequences with a label that depends on the first token (something to learn)."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 100, (SAMPLES, 12), generator=generator)
        self.mask = torch.ones_like(self.ids)
        self.mask[::3, 9:] = 0  # some padding, so the attention mask matters

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "attention_mask": self.mask[index], "labels": self.ids[index, 0] % 2}


def tiny_bert(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config)


def make_trainer(model: torch.nn.Module, callbacks: list, output: Path, **options: object) -> transformers.Trainer:
    settings = dict(
        output_dir=str(output), per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS, learning_rate=1e-3,
        report_to=[], logging_strategy="no", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
    )
    args = transformers.TrainingArguments(**{**settings, **options})
    return transformers.Trainer(model=model, args=args, train_dataset=RandomTokens(), callbacks=callbacks)


class StopAtStep(transformers.TrainerCallback):
    """Ends training after step ``step``, as an interruption would (after that step's checkpoint)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def heads_per_layer(model: torch.nn.Module) -> list[int]:
    return [layer.attention.self.num_attention_heads for layer in model.bert.encoder.layer]


def test_element_recipe_reaches_its_sparsity(tmp_path: Path):
    callback = pa.integrations.HFPruningCallback(GMP)
    model = tiny_bert()
    make_trainer(model, [callback], tmp_path).train()
    pruner = callback.pruner
    assert pruner.step_count == pruner.length.total_steps == SAMPLES // BATCH * EPOCHS
    assert pruner.summary().sparsity == pytest.approx(0.7, abs=1e-3)
    for name, param in pruner.params.items():
        assert torch.all(param[~pruner.masks[name]] == 0), name
    assert torch.count_nonzero(model.classifier.weight) == model.classifier.weight.numel()  # the last Linear stays dense


class MasksAtStep(transformers.TrainerCallback):
    """Copies the pruner's masks and weights after step ``step``."""

    def __init__(self, pruning: pa.integrations.HFPruningCallback, step: int):
        self.pruning, self.step, self.masks, self.weights = pruning, step, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.masks = {name: mask.clone() for name, mask in self.pruning.pruner.masks.masks.items()}
            self.weights = {name: param.detach().clone() for name, param in self.pruning.pruner.params.items()}


def test_movement_recipe_keeps_the_top_movement_scores(tmp_path: Path):
    callback = pa.integrations.HFPruningCallback(MOVEMENT)
    before_last_update = MasksAtStep(callback, SAMPLES // BATCH * EPOCHS - 1)
    model = tiny_bert()
    make_trainer(model, [callback, before_last_update], tmp_path).train()  # the last update is at the last step
    pruner = callback.pruner
    assert pruner.summary().sparsity == pytest.approx(0.6, abs=1e-3)
    names = list(pruner.params)
    scores = torch.cat([pruner.criterion.score(name, pruner.params[name]).flatten() for name in names])
    kept = torch.cat([pruner.masks[name].flatten() for name in names])
    cut_last = torch.cat([before_last_update.masks[name].flatten() for name in names]) & ~kept
    assert cut_last.any()
    assert scores[kept].min() >= scores[cut_last].max()  # the top of the movement scores the optimizer's gradients fed
    magnitudes = torch.cat([before_last_update.weights[name].abs().flatten() for name in names])
    assert not kept[magnitudes.argsort(descending=True)[: int(kept.sum())]].all()  # not simply the largest weights


def test_structured_heads_removed_and_training_continues(tmp_path: Path):
    callback = pa.integrations.HFPruningCallback(HEADS)
    model = tiny_bert()
    trainer = make_trainer(model, [callback], tmp_path)
    output = trainer.train()
    assert sum(heads_per_layer(model)) < 8  # heads removed whole ...
    assert all(layer.attention.self.attention_head_size == 8 for layer in model.bert.encoder.layer)  # ... head size kept
    assert callback.pruner.step_count == SAMPLES // BATCH * EPOCHS and torch.isfinite(torch.tensor(output.training_loss))
    optimizer = trainer.optimizer.optimizer  # inside Accelerate's wrapper
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(p.shape == optimizer.state[p]["exp_avg"].shape for p in model.parameters() if p in optimizer.state)
    batch = RandomTokens()[0]
    logits = model(input_ids=batch["input_ids"][None], attention_mask=batch["attention_mask"][None]).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def _interrupted_then_resumed(recipe: dict, tmp_path: Path, stop: int) -> tuple[pa.integrations.HFPruningCallback, torch.nn.Module]:
    first = pa.integrations.HFPruningCallback(recipe)
    make_trainer(tiny_bert(), [first, StopAtStep(stop)], tmp_path, save_strategy="steps", save_steps=stop).train()
    folder = tmp_path / f"checkpoint-{stop}"
    assert (folder / STATE_FILE).is_file()
    resumed_callback = pa.integrations.HFPruningCallback(recipe)
    resumed = tiny_bert(seed=7)  # other initial weights: everything must come from the checkpoint
    make_trainer(resumed, [resumed_callback], tmp_path, save_strategy="steps", save_steps=stop).train(resume_from_checkpoint=str(folder))
    return resumed_callback, resumed


@pytest.mark.parametrize("recipe", [GMP, HEADS], ids=["gmp", "heads"])
def test_resume_from_a_trainer_checkpoint_matches_the_uninterrupted_run(recipe: dict, tmp_path: Path):
    whole = pa.integrations.HFPruningCallback(recipe)
    uninterrupted = tiny_bert()
    make_trainer(uninterrupted, [whole], tmp_path / "whole").train()
    callback, resumed = _interrupted_then_resumed(recipe, tmp_path / "parts", stop=4)
    assert callback.pruner.step_count == whole.pruner.step_count
    assert heads_per_layer(resumed) == heads_per_layer(uninterrupted)
    for name, mask in whole.pruner.masks.masks.items():
        assert torch.equal(mask, callback.pruner.masks[name]), name
    assert callback.pruner.summary().sparsity == whole.pruner.summary().sparsity
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resuming_a_checkpoint_without_pruner_state_is_refused(tmp_path: Path):
    make_trainer(tiny_bert(), [StopAtStep(4)], tmp_path, save_strategy="steps", save_steps=4).train()
    trainer = make_trainer(tiny_bert(), [pa.integrations.HFPruningCallback(GMP)], tmp_path)
    with pytest.raises(StateError, match=STATE_FILE):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))


def test_snip_scores_with_the_loss_the_model_computes(tmp_path: Path):
    snip = {"name": "snip", "pruning": {"criterion": "snip", "schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0}}}
    callback = pa.integrations.HFPruningCallback(snip)
    make_trainer(tiny_bert(), [callback], tmp_path, num_train_epochs=1).train()
    assert callback.pruner.summary().sparsity == pytest.approx(0.5, abs=1e-3)


def test_regularizer_gradient_is_added_before_each_step(tmp_path: Path):
    def l1_norm(model: torch.nn.Module) -> float:
        return sum(float(module.weight.detach().abs().sum()) for module in model.bert.encoder.modules() if isinstance(module, torch.nn.Linear))

    plain, regularized = tiny_bert(), tiny_bert()
    make_trainer(plain, [], tmp_path / "plain", num_train_epochs=1).train()
    l1 = {"name": "l1", "regularizer": {"type": "l1", "strength": 1e-3}}
    make_trainer(regularized, [pa.integrations.HFPruningCallback(l1)], tmp_path / "l1", num_train_epochs=1).train()
    assert l1_norm(regularized) < 0.99 * l1_norm(plain)
