"""bench/compress_smollm2.py on a tiny random Llama: the cut + distillation loop, the from-scratch architecture, the table."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "compress_smollm2.py"
SHAPE = {"queries_per_group": 1, "intermediate": 24, "remove": 2}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("compress_smollm2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=48, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config)


def _args(**overrides):
    options = {"batch": 2, "calibration": 1, "order": "width-first", "temperature": 1.0, "device": "cpu", "seq": 16, "latency_rounds": 1, "new_tokens": 2, "width_importance": "activation"}
    return argparse.Namespace(**{**options, **overrides})


@pytest.mark.parametrize("distill", [True, False])
def test_cut_and_training_end_in_the_architecture_scratch_builds(bench, distill):
    model = _llama()
    config = bench.shaped_config(model.config, SHAPE)
    windows, evaluation = torch.randint(0, 60, (8, 16)), torch.randint(0, 60, (4, 16))
    before = [p.detach().clone() for p in model.lm_head.parameters()]
    stats = bench.train(model, windows, evaluation, _args(), SHAPE, distill, 1e-2)
    assert stats["steps"] == 4 and stats["perplexity_after_cut"] > 1
    assert (stats["teacher_seconds"] > 0) == distill  # the teacher ran on every step only when distilling
    assert not torch.equal(before[0], model.lm_head.weight)  # trained
    assert bench.architecture(model.config) == bench.architecture(config) == {
        "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 24, "hidden_size": 32, "head_dim": 8,
    }
    scratch = transformers.LlamaForCausalLM(config)
    assert sum(p.numel() for p in scratch.parameters()) == sum(p.numel() for p in model.parameters())
    assert len(model.model.layers) == 3  # removed layers are gone, not placeholders


def test_recipe_orders_width_and_depth_and_puts_distillation_first(bench):
    stages = bench.recipe(SHAPE, True, "depth-first", 1.0)["stages"]
    assert [s["type"] for s in stages] == ["distill", "depth", "gqa_width"]
    assert [s["type"] for s in bench.recipe({"remove": 3}, False, "width-first", 1.0)["stages"]] == ["depth"]


def test_cut_only_prunes_a_copy_like_a_variant_and_names_the_removed_layers(bench):
    dense, evaluation = _llama(), torch.randint(0, 60, (4, 16))
    assert bench.parse_cut("last=2", 5) == {"remove": 2, "layers": ["model.layers.2", "model.layers.3"]}
    assert bench.parse_cut("dense", 5) == {}
    with pytest.raises(SystemExit, match="expected key=count"):
        bench.parse_cut("heads=2", 5)
    args = _args(calibration=2, seed=0)
    row = bench.cut_only(args, "queries_per_group=1,intermediate=24,last=2", dense, evaluation, torch.randint(0, 60, (500,)))
    assert sorted(row["removed"]) == ["model.layers.2", "model.layers.3"] and row["config"]["num_hidden_layers"] == 3
    assert row["config"]["num_attention_heads"] == 2 and row["config"]["intermediate_size"] == 24 and row["params"] < sum(p.numel() for p in dense.parameters())
    assert len(dense.model.layers) == 5 and row["perplexity"] > 1
    assert bench.cut_only(args, "dense", dense, evaluation, torch.randint(0, 60, (500,)))["params_fraction"] == 1.0


def test_learning_rate_warms_up_then_decays_to_a_tenth(bench):
    rates = [bench.learning_rate(step, 20, 1.0) for step in range(20)]
    assert rates[0] == pytest.approx(0.5) and rates[1] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:])) and rates[-1] == pytest.approx(0.1, abs=0.01)


def test_table_measures_each_saved_architecture(bench, tmp_path):
    dense = _llama()
    small = bench.shaped_config(dense.config, SHAPE)
    rows = [
        {"variant": "dense", "config": bench.architecture(dense.config), "hf_config": dense.config.to_dict(), "params": 100, "dense_params": 100, "tokens": 0, "perplexity": 10.0},
        {"variant": "scratch", "config": bench.architecture(small), "hf_config": small.to_dict(), "params": 50, "dense_params": 100, "tokens": 40, "perplexity": 30.0, "train_seconds": 2.0},
    ]
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    lines = bench.table(_args(out=out)).splitlines()
    assert len(lines) == 4 and "| dense | 5 / 4 / 2 / 48 | 100 (100.0%) |" in lines[2] and "(1.00x)" in lines[2]
    assert lines[3].startswith("| scratch | 3 / 2 / 2 / 24 | 50 (50.0%) | 40 | - | 30.00 | 2 |")


def test_variants_share_the_dense_model_and_scratch_gets_the_pruned_architecture(bench, monkeypatch):
    monkeypatch.setattr(bench, "SHAPES", {"width_depth": SHAPE, "depth": {"remove": 2}, "width": {"queries_per_group": 1, "intermediate": 8}})
    dense, windows = _llama(), torch.randint(0, 60, (4, 16))
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    args = _args(tokens=32, scratch_factor=3, lr=1e-2, lr_scratch=1e-2, seed=0)
    rows = {v: bench.run_variant(args, v, dense, windows, torch.randint(0, 60, (500,))) for v in ("dense", "width_depth_kd", "scratch", "depth_kd")}
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in state.items())  # every variant pruned a copy
    assert rows["scratch"]["params"] == rows["width_depth_kd"]["params"] < rows["dense"]["params"]
    assert rows["scratch"]["config"] == rows["width_depth_kd"]["config"]
    assert (rows["width_depth_kd"]["tokens"], rows["scratch"]["tokens"]) == (32, 96)
    assert rows["depth_kd"]["config"]["num_hidden_layers"] == 3 and rows["dense"]["tokens"] == 0
