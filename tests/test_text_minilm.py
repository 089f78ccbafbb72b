"""The text pipeline: load an encoder offline, embed, distill a pruned copy into the dense model, measure agreement."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from pruneaware import ConfigError, Recipe, UsageError
from pruneaware.data.assets import AssetError, asset_path
from pruneaware.methods.movement import movement_pruning, soft_movement
from pruneaware.text import (
    ENCODER_SCOPE,
    distill,
    embed,
    embed_batches,
    load_encoder,
    mean_cosine,
    mean_pool,
    prune_without_training,
    shakespeare_passages,
    token_batches,
)

transformers = pytest.importorskip("transformers")

WORDS = "to be or not that is the question whether tis nobler in mind suffer slings and arrows of outrageous fortune".split()
PLAY = "**HAMLET**  \n{}\n\n**OPHELIA**  \n{}\n"


@pytest.fixture(scope="module")
def tiny_encoder_folder(tmp_path_factory) -> Path:
    """A randomly initialised two-layer BERT and a word-level vocabulary, saved as a sentence-transformers folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, initializer_range=0.3)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return folder


def sentences(count: int, seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (int(n),), generator=generator)) for n in torch.randint(3, 12, (count,), generator=generator)]


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_embeddings_are_unit_norm_and_do_not_depend_on_padding(tiny_encoder_folder):
    model, tokenizer = load_encoder(tiny_encoder_folder)
    texts = sentences(4, seed=1)
    together = embed(model, token_batches(tokenizer, texts, 4)[0])
    alone = torch.cat([embed(model, batch) for batch in token_batches(tokenizer, texts, 1)])
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_other_pooling_is_refused(tiny_encoder_folder, tmp_path):
    folder = tmp_path / "cls-pooled"
    folder.mkdir()
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    with pytest.raises(ConfigError, match="pooling_mode_mean_tokens"):
        load_encoder(folder)


def masked_copy(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``model`` with the student's final masks applied and no training: what distillation has to beat."""
    copied = copy.deepcopy(model)
    params = dict(copied.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    return copied


@pytest.mark.parametrize(
    "recipe",
    [movement_pruning(0.7, begin=4, end=12, every=2, unit="step", allocation="layer", scope=ENCODER_SCOPE), soft_movement(1.0, lr=0.1, scope=ENCODER_SCOPE)],
    ids=["hard", "soft"],
)
def test_distilling_a_pruned_copy_beats_its_mask_without_training(tiny_encoder_folder, recipe):
    teacher, tokenizer = load_encoder(tiny_encoder_folder)
    train, heldout = token_batches(tokenizer, sentences(30 * 8, seed=2), 8), token_batches(tokenizer, sentences(32, seed=3), 8)
    train_targets, heldout_targets = embed_batches(teacher, train), embed_batches(teacher, heldout)
    assert mean_cosine(teacher, heldout, heldout_targets) == pytest.approx(1.0, abs=1e-5)

    student = copy.deepcopy(teacher)
    losses: list[float] = []
    torch.manual_seed(0)  # dropout
    pruner = distill(student, recipe, train, train_targets, lr=3e-3, on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == len(train) and all(math.isfinite(loss) for loss in losses)
    assert not student.training
    layers = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense")
    assert set(pruner.params) == {f"encoder.layer.{i}.{layer}.weight" for i in range(2) for layer in layers}
    assert pruner.summary().sparsity > 0.2
    dense = dict(teacher.named_parameters())
    for name, param in student.named_parameters():
        if name.startswith(("embeddings.", "pooler.")):  # out of scope: no weight zeroed
            assert not bool(((dense[name] != 0) & (param == 0)).any()), name

    distilled = mean_cosine(student, heldout, heldout_targets)
    untrained = mean_cosine(masked_copy(teacher, pruner.masks.masks), heldout, heldout_targets)
    assert untrained < distilled < 1.0, (untrained, distilled)


def test_one_shot_pruning_without_training_and_bad_distill_arguments(tiny_encoder_folder):
    model, _ = load_encoder(tiny_encoder_folder)
    schedule = {"type": "one_shot", "sparsity": 0.6, "at": 0, "unit": "step"}
    recipe = Recipe.from_dict({"pruning": {"schedule": schedule, "granularity": {"type": "element", "scope": "layer"}}, "scope": ENCODER_SCOPE})
    pruner = prune_without_training(model, recipe)
    for name, param in pruner.params.items():
        assert float((param == 0).float().mean()) == pytest.approx(0.6, abs=0.01), name
    with pytest.raises(UsageError, match="one teacher target per batch"):
        distill(model, recipe, [], [])


def asset_or_skip(name: str) -> Path:
    """An offline asset's path, or a skip naming the command that fetches it."""
    try:
        return asset_path(name)
    except AssetError:
        pytest.skip(f"the {name} asset is not fetched; run `pruneaware fetch {name}`")


def test_passages_are_drawn_reproducibly_from_one_split(tmp_path):
    for slug, line in (("hamlet", "Words held out from training for the test of the model here."), ("macbeth", "Words used for training the student on the text of this play.")):
        (tmp_path / f"{slug}.md").write_text(PLAY.format(line, line.upper()))
    train = shakespeare_passages("train", 5, seed=1, root=tmp_path)
    assert sorted(train) == sorted(["Words used for training the student on the text of this play.", "WORDS USED FOR TRAINING THE STUDENT ON THE TEXT OF THIS PLAY."])
    assert shakespeare_passages("train", 5, seed=1, root=tmp_path) == train
    assert all("held out" in p.lower() for p in shakespeare_passages("heldout", 5, root=tmp_path))


@pytest.mark.slow
def test_pretrained_minilm_embeds_meaning_and_distills_a_pruned_copy():
    asset_or_skip("shakespeare")
    teacher, tokenizer = load_encoder(asset_or_skip("minilm"))
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    guitar, instrument, market = embed(teacher, token_batches(tokenizer, texts, 3)[0])
    assert float(guitar @ instrument) > float(guitar @ market) + 0.2

    passages = shakespeare_passages("train", 3 * 4, seed=0)
    train = token_batches(tokenizer, passages, 4, max_length=32)
    heldout = token_batches(tokenizer, shakespeare_passages("heldout", 8, seed=0), 8, max_length=32)
    train_targets, heldout_targets = embed_batches(teacher, train), embed_batches(teacher, heldout)
    student = copy.deepcopy(teacher)
    recipe = movement_pruning(0.5, begin=1, end=2, every=1, unit="step", allocation="layer", scope=ENCODER_SCOPE)
    pruner = distill(student, recipe, train, train_targets, lr=1e-4)
    assert len(pruner.params) == 6 * 6
    assert pruner.summary().sparsity == pytest.approx(0.5, abs=1e-3)
    assert 0.0 < mean_cosine(student, heldout, heldout_targets) < 1.0
