"""Distillation stage: frozen dense teacher, logit KL, hidden matching with projections, cache, lower precision, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import pruneaware as pa
from pruneaware.depth import skipped_names
from pruneaware.models.resnet20 import ResNet20
from tests.helpers import ThreeLayerMLP, random_batches

SCOPE = {"scope": {"include": ["*"]}}


def _loop(model, pruner, optimizer, batches):
    terms = []
    for x, y in batches:
        penalty = pruner.penalty()
        assert penalty == 0.0  # nothing pending between steps
        output = model(x)
        penalty = pruner.penalty()
        terms.append(float(penalty.detach()) if isinstance(penalty, torch.Tensor) else penalty)
        loss = F.cross_entropy(output, y) + penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return terms


def test_dense_teacher_is_a_frozen_copy_and_kl_grows_once_blocks_go():
    torch.manual_seed(0)
    model = ResNet20((1, 12, 12), 4)
    batches = [(torch.randn(6, 1, 12, 12), torch.randint(0, 4, (6,))) for _ in range(4)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    recipe = {**SCOPE, "stages": [{"type": "distill", "kl": 1.0, "temperature": 2.0}, {"type": "depth", "remove": 2, "at": [2], "unit": "step"}]}
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=4, example_inputs=batches[0][0])
    stage = pruner.stage("distill")
    teacher_before = {k: v.clone() for k, v in stage.teacher.model.state_dict().items()}
    terms = _loop(model, pruner, optimizer, batches)
    assert min(terms) > 0  # batch norm: the student trains on batch statistics, the teacher (eval) on running ones
    assert len(skipped_names(model)) == 2 and not skipped_names(stage.teacher.model)
    assert all(torch.equal(v, teacher_before[k]) for k, v in stage.teacher.model.state_dict().items())
    assert not any(p.requires_grad for p in stage.teacher.model.parameters()) and not stage.teacher.model.training
    assert stage.teacher.calls == 4 and stage.teacher_seconds > 0
    pruner.finalize()


def test_terms_are_zero_until_the_student_departs_from_its_dense_copy():
    torch.manual_seed(0)
    model = ThreeLayerMLP()
    batches = random_batches(3, 20, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recipe = {**SCOPE, "stages": [{"type": "distill", "layers": ["fc2"]}]}
    pruner = pa.Pruner(model, optimizer, recipe, example_inputs=batches[0][0])
    terms = _loop(model, pruner, optimizer, batches)
    assert terms[0] == pytest.approx(0.0, abs=1e-7) and terms[2] > 1e-6


def test_hidden_matching_with_a_learned_projection_for_a_wider_teacher():
    torch.manual_seed(0)
    student, teacher = ThreeLayerMLP((20, 16, 40, 4)), ThreeLayerMLP((20, 48, 40, 4))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    recipe = {**SCOPE, "stages": [{"type": "distill", "kl": 0.5, "layers": ["fc1", "fc2"], "hidden": 1.0}]}
    batches = random_batches(6, 20, 4)
    pruner = pa.Pruner(student, optimizer, recipe, example_inputs=batches[0][0])
    pruner.stage("distill").use_teacher(teacher)
    terms = _loop(student, pruner, optimizer, batches * 3)
    projections = pruner.stage("distill").match.projections
    assert list(projections) == ["fc1"]  # fc2 widths agree: compared directly
    assert projections["fc1"].weight.shape == (48, 16)
    assert any(projections["fc1"].weight is p for group in optimizer.param_groups for p in group["params"])
    assert terms[-1] < terms[0]


def test_cached_teacher_runs_once_per_distinct_batch_and_gives_the_same_terms():
    batches = random_batches(3, 20, 4)
    results = {}
    for cache in (False, True):
        torch.manual_seed(0)
        model = ThreeLayerMLP()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        recipe = {**SCOPE, "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}}, "stages": ["prune", {"type": "distill", "cache": cache}]}
        pruner = pa.Pruner(model, optimizer, recipe, example_inputs=batches[0][0])
        results[cache] = _loop(model, pruner, optimizer, batches * 3)
        if cache:
            assert (pruner.stage("distill").teacher.calls, pruner.stage("distill").teacher.hits) == (3, 6)
    assert results[True] == pytest.approx(results[False], rel=1e-5)


def test_teacher_in_bfloat16_is_close_to_float32():
    batches = random_batches(2, 20, 4)
    results = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = ThreeLayerMLP()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        recipe = {**SCOPE, "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.6, "at": 0, "unit": "step"}}, "stages": ["prune", {"type": "distill", "teacher_dtype": dtype}]}
        pruner = pa.Pruner(model, optimizer, recipe, example_inputs=batches[0][0])
        results[dtype] = _loop(model, pruner, optimizer, batches)
        assert next(pruner.stage("distill").teacher.model.parameters()).dtype == getattr(torch, dtype)
    assert results["bfloat16"] == pytest.approx(results["float32"], rel=0.1)


def test_terms_join_outputs_loss_of_a_hugging_face_model():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, max_position_embeddings=16, num_labels=3)
    model = transformers.BertForSequenceClassification(config)
    batch = {"input_ids": torch.randint(0, 50, (4, 8)), "labels": torch.tensor([0, 1, 2, 1])}
    recipe = {**SCOPE, "stages": [{"type": "distill", "task": 0.5, "layers": ["bert.encoder.layer.2"]}, {"type": "depth", "remove": 1, "layers": ["bert.encoder.layer.*"]}]}
    pruner = pa.Pruner(model, torch.optim.SGD(model.parameters(), lr=0.1), recipe, example_inputs=batch)
    model.train()
    output = model(**batch)
    task = F.cross_entropy(output.logits, batch["labels"])
    stage = pruner.stage("distill")
    expected = 0.5 * task + stage.terms["kl"] + stage.terms["hidden:bert.encoder.layer.2"]
    assert float(output.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert stage.terms["kl"] > 0 and pruner.penalty() == 0.0


def test_errors_name_the_problem():
    x = torch.randn(4, 20)
    model = ThreeLayerMLP()
    with pytest.raises(pa.ScopeError, match="'encoder.layer.9' matches no module"):
        pa.Pruner(model, None, {**SCOPE, "stages": [{"type": "distill", "layers": ["encoder.layer.9"]}]}, example_inputs=x)
    pruner = pa.Pruner(model, None, {**SCOPE, "stages": [{"type": "distill"}]}, example_inputs=x)
    pruner.stage("distill").use_teacher(ThreeLayerMLP((20, 32, 40, 5)))
    with pytest.raises(pa.ConfigError, match=r"logits of shape \(4, 5\).*student's logit shape \(4, 4\)"):
        model(x)
    pruner.stage("distill").use_teacher(ThreeLayerMLP())
    model(x).sum().backward()
    with pytest.raises(pa.UsageError, match="before backward"):
        pruner.penalty()
    with pytest.raises(pa.ConfigError, match="stages.distill.temperature"):
        pa.Pruner(ThreeLayerMLP(), None, {**SCOPE, "stages": [{"type": "distill", "temperature": 0}]}, example_inputs=x)
