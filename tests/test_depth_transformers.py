"""Depth pruning of transformer encoders and decoders: layers removed during training, config updated, reloaded without pruneaware."""

from __future__ import annotations

import pytest
import torch

import pruneaware as pa
from pruneaware.depth import SkippedBlock

transformers = pytest.importorskip("transformers")


def _bert():
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    return transformers.BertModel(config), "encoder.layer.*"


def _gpt2():
    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=4, n_head=2, n_positions=16)
    return transformers.GPT2LMHeadModel(config), "transformer.h.*"


def _llama():
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=16)
    return transformers.LlamaForCausalLM(config), "model.layers.*"


def _inputs():
    ids = torch.randint(0, 50, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding: the attention mask must still reach every remaining layer
    return {"input_ids": ids, "attention_mask": mask}


def _hidden(output):
    return output.logits if hasattr(output, "logits") else output.last_hidden_state


@pytest.mark.parametrize("build", [_bert, _gpt2, _llama], ids=["bert", "gpt2", "llama-gqa"])
def test_layers_removed_then_reloaded_by_from_pretrained(build, tmp_path):
    torch.manual_seed(0)
    model, pattern = build()
    batch = _inputs()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scope = {"modules": ["Linear", "Conv1D"]}  # GPT-2's projections are Conv1D
    recipe = {"scope": scope, "stages": [{"type": "depth", "remove": 2, "at": [1], "unit": "step"}]}
    pruner = pa.Pruner(model, optimizer, recipe, total_steps=3, example_inputs=batch)
    assert len(pruner.stage("depth").blocks) == 4
    for _ in range(3):
        loss = _hidden(model(**batch, use_cache=False)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert sum(isinstance(m, SkippedBlock) for m in model.modules()) == 2
    model.eval()
    with torch.no_grad():
        expected = _hidden(model(**batch, use_cache=False))
    pruner.finalize()
    assert model.config.num_hidden_layers == 2
    assert not any(isinstance(m, SkippedBlock) for m in model.modules())
    layer_ids = [m.layer_idx for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int) and hasattr(m, "q_proj")]
    assert layer_ids in ([], [0, 1])  # renumbered for a KV cache
    with torch.no_grad():
        assert torch.allclose(_hidden(model(**batch, use_cache=False)), expected, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(_hidden(reloaded(**batch, use_cache=False)), expected, atol=1e-5)
        if hasattr(reloaded, "generate"):  # a KV cache sized by the new config
            reloaded.generate(batch["input_ids"][:1], max_new_tokens=3, do_sample=False)


def test_vit_encoder_layers():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3)
    x = torch.randn(2, 3, 16, 16)
    pruner = pa.Pruner(model, None, {"stages": [{"type": "depth", "remove": 1}]}, example_inputs=x)
    assert sorted(pruner.stage("depth").blocks) == [f"encoder.layers.encoder_layer_{i}" for i in range(3)]
    assert sum(isinstance(m, SkippedBlock) for m in model.encoder.layers) == 1
    assert model(x).shape == (2, 3)


def test_unknown_layer_pattern_is_named():
    model, _ = _bert()
    with pytest.raises(pa.ScopeError, match="'model.layers.*' matches no module"):
        pa.Pruner(model, None, {"stages": [{"type": "depth", "remove": 1, "layers": ["model.layers.*"]}]}, example_inputs=_inputs())
