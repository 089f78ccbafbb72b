"""Structured pruning of transformers: whole attention heads (and MLP channels) removed during training,
on torchvision's ViT and Hugging Face BERT and GPT-2, with the layer conversions they need."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core.errors import TraceError, UsageError
from pruneaware.measure import count_macs
from pruneaware.structured import PrunableMultiheadAttention, convert_for_pruning
from pruneaware.structured.attention import find_attention
from pruneaware.structured.convert import is_transposed_conv1d

torch.set_num_threads(1)
IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(4) % 10
TOKENS = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))


def small_vit(convert: bool = True) -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10
    )
    return convert_for_pruning(vit) if convert else vit


def small_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=32, num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def small_gpt2(convert: bool = True) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=100, n_positions=32, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config)
    return convert_for_pruning(model) if convert else model


def vit_loss(model: nn.Module) -> torch.Tensor:
    return F.cross_entropy(model(IMAGES), LABELS)


def bert_loss(model: nn.Module) -> torch.Tensor:
    return F.cross_entropy(model(TOKENS).logits, LABELS % 3)


def gpt2_loss(model: nn.Module) -> torch.Tensor:
    logits = model(TOKENS).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), TOKENS[:, 1:].reshape(-1))


def recipe(ratio: float, **fields: object) -> pa.Recipe:
    # two updates: half the fraction at step 1, all of it at step 3
    schedule = {"type": "linear", "initial": ratio / 2, "final": ratio, "begin": 1, "end": 3, "every": 2, "unit": "step"}
    return pa.Recipe.from_dict({"name": "heads", "structured": {"schedule": schedule, **fields}})


def train(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, steps: int) -> None:
    for _ in range(steps):
        loss = loss_fn(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def attention_modules(model: nn.Module, type_name: str) -> list[nn.Module]:
    return [module for module in model.modules() if type(module).__name__ == type_name]


def assert_still_trains(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn) -> None:
    """The optimizer holds exactly the model's (new) parameters and a step changes them."""
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in model.parameters()}
    before = [p.detach().clone() for p in model.parameters()]
    train(model, optimizer, loss_fn, 1)
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))


# -- conversions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_prunable_attention_computes_what_multihead_attention_computes(batch_first: bool, need_weights: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    ours = PrunableMultiheadAttention.from_multihead_attention(mha).eval()
    query, memory = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    if not batch_first:
        query, memory = query.transpose(0, 1), memory.transpose(0, 1)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, -2:] = True
    causal = torch.ones(5, 7, dtype=torch.bool).triu(1)
    for kwargs in (
        {},
        {"key_padding_mask": padding},
        {"attn_mask": causal, "key_padding_mask": padding},
        {"average_attn_weights": False},
    ):
        expected, expected_weights = mha(query, memory, memory, need_weights=need_weights, **kwargs)
        out, weights = ours(query, memory, memory, need_weights=need_weights, **kwargs)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        if need_weights:
            torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)
        else:
            assert weights is None and expected_weights is None


def test_prunable_attention_handles_unbatched_inputs_and_other_key_widths() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, kdim=12, vdim=10).eval()
    ours = PrunableMultiheadAttention.from_multihead_attention(mha).eval()
    query, key, value = torch.randn(5, 16), torch.randn(6, 12), torch.randn(6, 10)
    for expected, got in zip(mha(query, key, value), ours(query, key, value)):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_converted_vit_and_gpt2_give_identical_outputs() -> None:
    vit = small_vit(convert=False).eval()
    expected = vit(IMAGES)
    assert torch.allclose(convert_for_pruning(vit)(IMAGES), expected, atol=1e-5)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in vit.modules())
    gpt2 = small_gpt2(convert=False).eval()
    expected = gpt2(TOKENS).logits
    assert torch.equal(convert_for_pruning(gpt2)(TOKENS).logits, expected)
    assert not any(is_transposed_conv1d(m) for m in gpt2.modules())


def test_unconverted_or_unknown_attention_raises_naming_the_module_and_the_fix() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_heads = 2
            self.qkv = nn.Linear(8, 24)
            self.proj = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return self.proj(F.scaled_dot_product_attention(q, k, v))

    class Net(nn.Module):
        def __init__(self, attention: nn.Module) -> None:
            super().__init__()
            self.attn = attention
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.attn(x, x, x)[0] if isinstance(self.attn, nn.MultiheadAttention) else self.attn(x)
            return self.head(out.mean(1))

    example = torch.randn(2, 5, 8)
    with pytest.raises(TraceError, match="'attn'.*convert_for_pruning"):
        pa.Pruner(Net(nn.MultiheadAttention(8, 2, batch_first=True)), None, recipe(0.5), total_steps=4, example_inputs=example)
    with pytest.raises(TraceError, match="'attn' \\(Odd\\).*ignore"):
        pa.Pruner(Net(Odd()), None, recipe(0.5), total_steps=4, example_inputs=example)
    pa.Pruner(Net(Odd()), None, recipe(0.5, ignore=["attn"]), total_steps=4, example_inputs=example)
    with pytest.raises(TraceError, match="'transformer.h.0.attn.c_attn' is a Hugging Face Conv1D.*convert_for_pruning"):
        find_attention(small_gpt2(convert=False))
    with pytest.raises(UsageError, match="per-head masks"):
        PrunableMultiheadAttention(8, 2, batch_first=True)(example, example, example, attn_mask=torch.zeros(4, 5, 5))


# -- the model families --------------------------------------------------------------------------


def test_vit_loses_whole_heads_and_mlp_channels_during_training() -> None:
    model = small_vit()
    dense = count_macs(model, IMAGES[:1]).dense
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pa.Pruner(model, optimizer, recipe(0.4), total_steps=6, example_inputs=IMAGES)
    train(model, optimizer, vit_loss, 4)
    attentions = attention_modules(model, "PrunableMultiheadAttention")
    assert sum(a.num_heads for a in attentions) < 8
    for attention in attentions:
        assert attention.head_dim == 16 and attention.q_proj.out_features == attention.num_heads * 16
    assert all(block.mlp[0].out_features < 128 for block in model.encoder.layers)
    assert model.hidden_dim == model.conv_proj.out_channels
    assert model(IMAGES).shape == (4, 10)
    assert 0.3 < count_macs(model, IMAGES[:1]).dense / dense < 0.65
    assert_still_trains(model, optimizer, vit_loss)


def test_bert_loses_whole_heads_during_training() -> None:
    model = small_bert()
    dense = count_macs(model, TOKENS[:1]).dense
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pa.Pruner(model, optimizer, recipe(0.4), total_steps=6, example_inputs=TOKENS)
    train(model, optimizer, bert_loss, 4)
    attentions = attention_modules(model, "BertSelfAttention")
    assert sum(a.num_attention_heads for a in attentions) < 8
    for attention in attentions:
        assert attention.attention_head_size == 16
        assert attention.all_head_size == attention.num_attention_heads * 16 == attention.query.out_features
    assert model(TOKENS).logits.shape == (4, 3)
    assert 0.3 < count_macs(model, TOKENS[:1]).dense / dense < 0.65
    assert_still_trains(model, optimizer, bert_loss)


def test_gpt2_loses_whole_heads_and_keeps_its_tied_embedding() -> None:
    model = small_gpt2()
    dense = count_macs(model, TOKENS[:1]).dense
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pa.Pruner(model, optimizer, recipe(0.5), total_steps=6, example_inputs=TOKENS)
    train(model, optimizer, gpt2_loss, 4)
    attentions = attention_modules(model, "GPT2Attention")
    assert sum(a.num_heads for a in attentions) == 4
    for attention in attentions:
        assert attention.head_dim == 16 and attention.split_size == attention.num_heads * 16
        assert attention.c_attn.out_features == 3 * attention.split_size == 3 * attention.c_proj.in_features
    assert model.lm_head.weight is model.transformer.wte.weight, "the output layer must stay tied to the embedding"
    assert model(TOKENS).logits.shape == (4, 16, 100)
    assert 0.3 < count_macs(model, TOKENS[:1]).dense / dense < 0.65
    assert_still_trains(model, optimizer, gpt2_loss)


def test_heads_false_removes_head_dimensions_and_keeps_the_head_count() -> None:
    model = small_bert()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pa.Pruner(model, optimizer, recipe(0.5, heads=False), total_steps=6, example_inputs=TOKENS)
    train(model, optimizer, bert_loss, 4)
    for attention in attention_modules(model, "BertSelfAttention"):
        assert attention.num_attention_heads == 4 and attention.attention_head_size < 16
        assert attention.query.out_features == 4 * attention.attention_head_size == attention.all_head_size
    assert model(TOKENS).logits.shape == (4, 3)


@pytest.mark.parametrize(
    ("build", "loss_fn", "example", "heads"),
    [(small_vit, vit_loss, IMAGES, "num_heads"), (small_gpt2, gpt2_loss, TOKENS, "num_heads")],
    ids=["vit", "gpt2"],
)
def test_uniform_allocation_takes_the_fraction_of_each_layers_heads_as_built(build, loss_fn, example, heads: str) -> None:
    model = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pa.Pruner(model, optimizer, recipe(0.5, allocation="uniform"), total_steps=6, example_inputs=example)
    train(model, optimizer, loss_fn, 4)  # 1 of 4 heads per layer at step 1, 2 of 4 (not 2 of the 3 left) at step 3
    counts = [getattr(a, heads) for a in model.modules() if type(a).__name__ in ("PrunableMultiheadAttention", "GPT2Attention")]
    assert counts == [2, 2]


@pytest.mark.parametrize(("max_layer_ratio", "kept"), [(0.5, 2), (1.0, 1)])
def test_no_attention_layer_loses_more_heads_than_its_cap(max_layer_ratio: float, kept: int) -> None:
    model = small_vit()
    first, second = (block.self_attention for block in model.encoder.layers)
    with torch.no_grad():  # one head of the first layer dominates it: ranking all 8 heads, its other 3 come last
        for linear in (first.q_proj, first.k_proj, first.v_proj):
            linear.weight[:16].mul_(100.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    one_shot = {"type": "one_shot", "sparsity": 0.5, "at": 1, "unit": "step"}
    cap = {"name": "cap", "structured": {"schedule": one_shot, "max_layer_ratio": max_layer_ratio}}
    pa.Pruner(model, optimizer, cap, total_steps=2, example_inputs=IMAGES)
    train(model, optimizer, vit_loss, 1)
    assert first.num_heads == kept and first.q_proj.out_features == kept * 16
    assert first.num_heads + second.num_heads == 4 + kept - 1, "heads held back by the cap are not taken elsewhere"
    assert model(IMAGES).shape == (4, 10)


def test_soft_phase_zeroes_heads_then_removes_them() -> None:
    model = small_gpt2()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pa.Pruner(model, optimizer, recipe(0.5, phase="soft"), total_steps=6, example_inputs=TOKENS)
    train(model, optimizer, gpt2_loss, 1)  # soft update at step 1: shapes unchanged
    assert all(a.num_heads == 4 for a in attention_modules(model, "GPT2Attention"))
    train(model, optimizer, gpt2_loss, 2)  # step 3: the last update removes the selection
    assert sum(a.num_heads for a in attention_modules(model, "GPT2Attention")) == 4
    assert model(TOKENS).logits.shape == (4, 16, 100)


def test_resume_replays_head_removals_on_a_fresh_model() -> None:
    model = small_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = pa.Pruner(model, optimizer, recipe(0.5), total_steps=6, example_inputs=TOKENS)
    train(model, optimizer, gpt2_loss, 4)
    state, weights = pruner.state_dict(), copy.deepcopy(model.state_dict())
    fresh = small_gpt2()
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    fresh_pruner = pa.Pruner(fresh, fresh_optimizer, recipe(0.5), total_steps=6, example_inputs=TOKENS)
    fresh_pruner.load_state_dict(state)
    fresh.load_state_dict(weights)
    for ours, theirs in zip(attention_modules(fresh, "GPT2Attention"), attention_modules(model, "GPT2Attention")):
        assert (ours.num_heads, ours.head_dim, ours.split_size) == (theirs.num_heads, theirs.head_dim, theirs.split_size)
    model.eval(), fresh.eval()
    assert torch.equal(fresh(TOKENS).logits, model(TOKENS).logits)
    assert_still_trains(fresh.train(), fresh_optimizer, gpt2_loss)


@pytest.mark.slow
def test_vit_b_16_at_224_loses_heads_and_mlp_channels() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = convert_for_pruning(torchvision.models.vit_b_16())
    images = torch.randn(2, 3, 224, 224)
    dense = count_macs(model, images[:1]).dense
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    one_shot = {"type": "one_shot", "sparsity": 0.4, "at": 1, "unit": "step"}
    pa.Pruner(model, optimizer, {"name": "vit", "structured": {"schedule": one_shot}}, total_steps=3, example_inputs=images[:1])
    loss_fn = lambda m: F.cross_entropy(m(images), torch.tensor([1, 2]))  # noqa: E731
    train(model, optimizer, loss_fn, 2)
    attentions = attention_modules(model, "PrunableMultiheadAttention")
    assert sum(a.num_heads for a in attentions) < 12 * 12 and all(a.head_dim == 64 for a in attentions)
    assert all(block.mlp[0].out_features < 3072 for block in model.encoder.layers)
    assert model(images).shape == (2, 1000)
    assert 0.3 < count_macs(model, images[:1]).dense / dense < 0.65  # 0.59 at seed 0
