"""Width pruning of a grouped-query Llama decoder: whole KV groups, query heads within groups, gated-MLP neurons; config reloads."""

from __future__ import annotations

import pytest
import torch

import pruneaware as pa
from pruneaware.depth import SkippedBlock

transformers = pytest.importorskip("transformers")
SCOPE = {"scope": {"include": ["*"]}}


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config)


def _batch():
    ids = torch.randint(0, 50, (4, 32))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


@pytest.mark.parametrize("order", ["width-first", "depth-first"])
def test_width_and_depth_in_one_recipe_train_and_reload(order, tmp_path):
    model, batch = _llama(), _batch()
    width = {"type": "gqa_width", "kv_groups": 1, "queries_per_group": 2, "intermediate": 24}
    depth = {"type": "depth", "remove": 1, "layers": ["model.layers.*"]}
    stages = [width, depth] if order == "width-first" else [depth, width]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = pa.Pruner(model, optimizer, {**SCOPE, "stages": stages}, total_steps=3, example_inputs=batch)
    for _ in range(3):  # the shape that failed inside torch ('shape [4, 32, -1, 8] is invalid') now trains
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pruner.finalize()
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == (8, 4, 8)  # head_dim 4: 2 query heads, 1 KV head
    assert model.model.layers[0].mlp.down_proj.in_features == 24
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, config.intermediate_size, config.head_dim) == (3, 2, 1, 24, 4)
    assert not any(isinstance(m, SkippedBlock) for m in model.modules())
    live = {id(p) for p in model.parameters()}
    assert all(id(p) in live for group in optimizer.param_groups for p in group["params"])
    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model(**batch).logits, atol=1e-5)
        reloaded.generate(batch["input_ids"][:1, :5], max_new_tokens=3, do_sample=False)


def test_keeping_every_group_changes_nothing():
    model, batch = _llama(), _batch()
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    from pruneaware.structured.gqa import prune_gqa

    prune_gqa(model, kv_groups=2, importance="weight")
    prune_gqa(model, kv_groups=2, batches=[batch])
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, before, atol=1e-6)


def test_errors():
    batch = _batch()
    with pytest.raises(pa.ConfigError, match=r"gqa.kv_groups.*\[1, 2\]"):
        pa.Pruner(_llama(), None, {**SCOPE, "stages": [{"type": "gqa_width", "kv_groups": 3}]}, example_inputs=batch)
    with pytest.raises(pa.ConfigError, match="Llama-family"):
        pa.Pruner(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)), None, {**SCOPE, "stages": [{"type": "gqa_width", "kv_groups": 1}]}, example_inputs=torch.randn(2, 4))


def test_channel_pruning_refuses_grouped_query_attention_before_cutting_and_prunes_the_mlp_when_it_is_ignored():
    from pruneaware.core.errors import TraceError

    schedule = {"type": "linear", "initial": 0.25, "final": 0.5, "begin": 1, "end": 3, "every": 2, "unit": "step"}
    model, batch = _llama(), _batch()
    before = {name: p.shape for name, p in model.named_parameters()}
    with pytest.raises(TraceError, match="'model.layers.0.self_attn' is grouped-query.*'gqa_width' stage.*'model.layers.\\*.self_attn'"):
        pa.Pruner(model, None, {"structured": {"schedule": schedule}}, total_steps=4, example_inputs=batch)
    assert {name: p.shape for name, p in model.named_parameters()} == before
    recipe = {"structured": {"schedule": schedule, "ignore": ["model.layers.*.self_attn"]}}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    pa.Pruner(model, optimizer, recipe, total_steps=4, example_inputs=batch)
    for _ in range(4):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(layer.mlp.gate_proj.out_features < 48 for layer in model.model.layers)
    assert model.model.layers[0].self_attn.q_proj.out_features == 32
