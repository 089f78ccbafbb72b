"""Distillation and depth pruning through the Hugging Face Trainer and Lightning callbacks."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.depth import SkippedBlock

RECIPE = {
    "scope": {"include": ["*"]},
    "stages": [{"type": "distill", "kl": 1.0, "layers": ["bert.encoder.layer.2"]}, {"type": "depth", "remove": 1, "at": [0.25], "layers": ["bert.encoder.layer.*"]}],
}


@pytest.mark.slow
def test_hf_trainer_distills_through_outputs_loss_and_compacts_layers(tmp_path):
    pytest.importorskip("accelerate")
    from tests.test_integration_hf import make_trainer, transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    callback = pa.integrations.HFPruningCallback(RECIPE)
    make_trainer(model, [callback], tmp_path, num_train_epochs=1).train()
    stage = callback.pruner.stage("distill")
    assert stage.teacher.calls == 4 and stage.terms["kl"] > 0
    assert model.config.num_hidden_layers == 2 and not any(isinstance(m, SkippedBlock) for m in model.modules())
    model.save_pretrained(tmp_path / "saved")
    assert transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").config.num_hidden_layers == 2


def test_lightning_loop_adds_the_penalty_before_backward():
    pytest.importorskip("pytorch_lightning")
    from tests.test_integration_lightning import Classifier, loader, trainer

    callback = pa.integrations.PruningCallback({"scope": {"include": ["*"]}, "stages": [{"type": "distill", "layers": ["net.fc2"]}]})
    seen = []

    class Distilled(Classifier):
        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            penalty = callback.pruner.penalty()
            loss = F.cross_entropy(self(inputs), targets) + callback.pruner.penalty()
            seen.append((penalty, float(loss.detach())))
            return loss

    trainer([callback], max_epochs=1).fit(Distilled(), loader())
    assert len(seen) == 8 and all(penalty == 0.0 for penalty, _ in seen)
    assert callback.pruner.stage("distill").teacher.calls == 8
