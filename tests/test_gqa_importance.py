"""Which heads and neurons gqa_width keeps: activation importance (Minitron's) against weight norms, equivalences of the cut."""

from __future__ import annotations

import pytest
import torch

import pruneaware as pa
from pruneaware.structured.gqa import activation_scores, choose_gqa, prune_gqa

transformers = pytest.importorskip("transformers")
SCOPE = {"scope": {"include": ["*"]}}


def _llama(layers: int = 3):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def _ids(rows: int = 4, length: int = 16):
    return torch.randint(0, 50, (rows, length), generator=torch.Generator().manual_seed(1))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _silence(model, neurons: list[int], heads: list[int]) -> None:
    """Zero the gate/up rows of ``neurons`` and the q rows / o columns of query ``heads`` in every layer (their contribution is exactly 0)."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight[neurons] = 0
            layer.mlp.up_proj.weight[neurons] = 0
            for head in heads:
                layer.self_attn.q_proj.weight[head * 4:(head + 1) * 4] = 0
                layer.self_attn.o_proj.weight[:, head * 4:(head + 1) * 4] = 0


@pytest.mark.parametrize("importance", ["activation", "weight"])
def test_removing_silenced_heads_and_neurons_changes_no_output(importance):
    model, ids = _llama(), _ids()
    neurons, heads = list(range(0, 48, 3)), [1, 6]  # one query head in each of the two KV groups (heads 0-3, 4-7)
    _silence(model, neurons, heads)
    before = _logits(model, ids)
    plan = choose_gqa(model, queries_per_group=3, intermediate=32, importance=importance, batches=[ids])
    assert all(set(keep["neurons"]).isdisjoint(neurons) and set(keep["heads"]) == {0, 2, 3, 4, 5, 7} for keep in plan.values())
    prune_gqa(model, queries_per_group=3, intermediate=32, importance=importance, batches=[ids])
    assert model.model.layers[0].self_attn.q_proj.out_features == 24 and model.config.intermediate_size == 32
    assert torch.allclose(_logits(model, ids), before, atol=1e-5)


def test_removing_a_silenced_kv_group_changes_no_output():
    model, ids = _llama(), _ids()
    _silence(model, [], [4, 5, 6, 7])  # every query head of group 1 contributes nothing
    before = _logits(model, ids)
    prune_gqa(model, kv_groups=1, batches=[ids])
    attn = model.model.layers[1].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, model.config.num_key_value_heads) == (16, 4, 1)
    assert torch.allclose(_logits(model, ids), before, atol=1e-5)


def test_activation_scores_are_what_each_head_and_neuron_adds():
    model, ids = _llama(layers=1), _ids()
    scores = activation_scores(model, [ids])
    inputs = {}
    layer = model.model.layers[0]
    handles = [layer.self_attn.o_proj.register_forward_pre_hook(lambda m, a: inputs.__setitem__("o", a[0])), layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: inputs.__setitem__("down", a[0]))]
    _logits(model, ids)
    for handle in handles:
        handle.remove()
    heads, neurons = scores["model.layers.0"]
    o = layer.self_attn.o_proj
    for head in (0, 5):  # the change of the attention output when the head is zeroed, per token
        ablated = inputs["o"].clone()
        ablated[..., head * 4:(head + 1) * 4] = 0
        change = (o(inputs["o"]) - o(ablated)).detach().norm(dim=-1).mean()
        assert heads[head] == pytest.approx(float(change), rel=1e-4)
    assert torch.allclose(neurons, inputs["down"].abs().mean((0, 1)).detach(), rtol=1e-5)


def test_padding_does_not_count():
    model, ids = _llama(), _ids(length=10)
    padded = torch.cat([ids, torch.randint(0, 50, (4, 6))], dim=1)
    mask = torch.cat([torch.ones(4, 10), torch.zeros(4, 6)], dim=1).long()
    plain, masked = activation_scores(model, [ids]), activation_scores(model, [{"input_ids": padded, "attention_mask": mask}])
    for name, (heads, neurons) in plain.items():
        assert torch.allclose(masked[name][0], heads, rtol=1e-4) and torch.allclose(masked[name][1], neurons, rtol=1e-4)


def test_activation_drops_a_neuron_with_large_weights_that_stays_quiet_where_weight_norms_keep_it():
    model, ids = _llama(layers=1), _ids()
    with torch.no_grad():  # neuron 7 gets the largest product of weight norms, but its gate barely opens: its output is ~20x smaller than the others'
        mlp = model.model.layers[0].mlp
        mlp.up_proj.weight[7] *= 50
        mlp.down_proj.weight[:, 7] *= 50
        mlp.gate_proj.weight[7] *= 1e-3
    weight = choose_gqa(model, intermediate=8, importance="weight")
    activation = choose_gqa(model, intermediate=8, batches=[ids])
    assert 7 in weight["model.layers.0"]["neurons"] and 7 not in activation["model.layers.0"]["neurons"]


def test_stage_defaults_to_activation_on_the_calibration_data_and_resumes_the_same_cut(tmp_path):
    model, ids = _llama(), _ids()
    _silence(model, list(range(16)), [0, 4])
    calibration = [(ids, None)]
    recipe = {**SCOPE, "stages": [{"type": "gqa_width", "queries_per_group": 3, "intermediate": 32}]}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=2, example_inputs=ids, calibration_data=calibration)
    plan = pruner.stage("gqa_width").plan
    assert plan is not None and all(keep["neurons"] == list(range(16, 48)) and keep["heads"] == [1, 2, 3, 5, 6, 7] for keep in plan.values())
    state = pruner.state_dict()
    fresh = _llama()
    _silence(fresh, list(range(16)), [0, 4])  # the model the run started from: its step-0 cut is the saved one
    resumed = pa.Pruner(fresh, torch.optim.AdamW(fresh.parameters(), lr=1e-3), recipe, total_steps=2, example_inputs=ids, calibration_data=calibration)
    resumed.load_state_dict(state)
    fresh.load_state_dict(model.state_dict())
    assert resumed.stage("gqa_width").plan == plan
    assert torch.allclose(_logits(fresh, ids), _logits(model, ids), atol=1e-6)
    other = _llama()  # not silenced: its own step-0 cut keeps other neurons, and resuming onto it is refused
    refused = pa.Pruner(other, None, recipe, total_steps=2, example_inputs=ids, calibration_data=calibration)
    with pytest.raises(pa.StateError, match="other heads or neurons"):
        refused.load_state_dict(state)


def test_a_later_cut_is_replayed_from_the_saved_plan():
    model, ids = _llama(), _ids()
    recipe = {**SCOPE, "stages": [{"type": "gqa_width", "kv_groups": 1, "intermediate": 24, "at": 1}]}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=3, example_inputs=ids, calibration_data=[(ids, None)])
    model(ids).logits.pow(2).mean().backward()
    optimizer.step()  # step 1: the cut, on trained weights
    assert model.config.num_key_value_heads == 1
    fresh = _llama()
    resumed = pa.Pruner(fresh, None, recipe, total_steps=3, example_inputs=ids, calibration_data=[(ids, None)])
    resumed.load_state_dict(pruner.state_dict())
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(_logits(fresh, ids), _logits(model, ids), atol=1e-6)


def test_errors():
    model, ids = _llama(), _ids()
    with pytest.raises(pa.ConfigError, match="importance"):
        pa.Pruner(model, None, {**SCOPE, "stages": [{"type": "gqa_width", "intermediate": 8, "importance": "taylor"}]}, example_inputs=ids)
    with pytest.raises(pa.ConfigError, match="calibration"):
        pa.Pruner(model, None, {**SCOPE, "stages": [{"type": "gqa_width", "intermediate": 8}]})
    with pytest.raises(pa.ConfigError, match="gqa.batches"):
        prune_gqa(model, intermediate=8)
    with pytest.raises(pa.ConfigError, match="calibration_batches"):
        pa.Pruner(model, None, {**SCOPE, "stages": [{"type": "gqa_width", "intermediate": 8, "calibration_batches": 0}]}, example_inputs=ids)
