"""Depth pruning of a Llama decoder is exact, and block influence compares hidden states token by token."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneaware.depth import block_influence, compact, remove_block

transformers = pytest.importorskip("transformers")


def _llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=5, num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config).eval()


def test_removing_layers_equals_zeroing_their_residual_branches():
    ids = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(1))
    removed, zeroed = _llama(), _llama()
    with torch.no_grad():
        for index in (1, 3):  # a layer whose attention and MLP add nothing to the residual stream passes its input through
            zeroed.model.layers[index].self_attn.o_proj.weight.zero_()
            zeroed.model.layers[index].mlp.down_proj.weight.zero_()
        expected = zeroed(ids).logits
    for name in ("model.layers.1", "model.layers.3"):
        remove_block(removed, name)
    with torch.no_grad():
        assert torch.allclose(removed(ids).logits, expected, atol=1e-5)
        assert compact(removed) == [1, 3] and removed.config.num_hidden_layers == 3
        assert torch.allclose(removed(ids).logits, expected, atol=1e-5)
        cached = removed.generate(ids[:1, :4], max_new_tokens=4, do_sample=False)  # the KV cache indexes the renumbered layers
        full = zeroed.generate(ids[:1, :4], max_new_tokens=4, do_sample=False)
    assert torch.equal(cached, full)


class _Rotate(nn.Module):
    """Adds ``scale`` times a 90-degree rotation of each token's first two features, on the tokens in ``tokens``."""

    def __init__(self, tokens: list[int], scale: float):
        super().__init__()
        self.tokens, self.scale = tokens, scale

    def forward(self, x):
        change = torch.zeros_like(x)
        change[:, self.tokens, 0], change[:, self.tokens, 1] = -x[:, self.tokens, 1], x[:, self.tokens, 0]
        return x + self.scale * change


def test_influence_is_per_token_so_a_huge_token_does_not_hide_a_block_that_rewrites_the_others():
    x = torch.zeros(2, 4, 8)
    x[:, :, 0] = 1.0
    x[:, 0, 0] = 1000.0  # an attention-sink-like token with a huge activation
    model = nn.Sequential(_Rotate([1, 2, 3], 10.0), _Rotate([0, 1, 2, 3], 0.1))  # the first turns three tokens by ~84 degrees, the second every token by ~6
    scores = block_influence(model, ["0", "1"], [x])
    assert scores["0"] > 0.5 > 0.01 > scores["1"]  # per sequence the first would look unchanged (the huge token dominates the cosine)
    image = torch.randn(2, 3, 4, 4)
    assert block_influence(nn.Sequential(nn.Identity(), nn.Identity()), ["0"], [image])["0"] == pytest.approx(0.0, abs=1e-6)  # 4-D: per example


class _Keywords(nn.Module):
    """Runs ``blocks`` on ``hidden`` (a batch given as keywords, as Hugging Face models take it)."""

    def __init__(self, *blocks: nn.Module):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, hidden, attention_mask):
        return self.blocks(hidden)


def test_influence_leaves_out_padding_tokens():
    hidden = torch.zeros(2, 4, 8)
    hidden[:, :, 0] = 1.0
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    # the first block rewrites only padding positions, the second turns every real token a little
    model = _Keywords(_Rotate([3], 10.0), _Rotate([0, 1, 2], 0.3))
    batch = {"hidden": hidden, "attention_mask": mask}
    scores = block_influence(model, ["blocks.0", "blocks.1"], [batch])
    assert scores["blocks.0"] == pytest.approx(0.0, abs=1e-6)
    assert scores["blocks.1"] > 0.01
    unmasked = block_influence(model, ["blocks.0", "blocks.1"], [{"hidden": hidden, "attention_mask": torch.ones(2, 4)}])
    assert unmasked["blocks.0"] > unmasked["blocks.1"]  # counted in, the padding would make the first look the more important
