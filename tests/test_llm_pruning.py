"""One-shot LLM pruning (Wanda, SparseGPT): what each keeps, exact patterns, reconstruction, and continuing with a Pruner."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruneaware as pa
from pruneaware.core.errors import ConfigError
from pruneaware.llm.statistics import InputStatistics
from pruneaware.llm.targets import parse_target
from pruneaware.llm.wanda import row_wise_keep

transformers = pytest.importorskip("transformers")


class TinyStack(nn.Module):
    """Blocks of Linear -> tanh in an nn.ModuleList, the shape the block-by-block driver looks for."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x)
        return x


def tiny_llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(config).eval()


def token_batches(count: int = 3, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (2, 16), generator=generator) for _ in range(count)]


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{name}"}


def dense_input_norms(model: nn.Module, modules: dict[str, nn.Linear], batches: list) -> dict[str, torch.Tensor]:
    """||X_j|| of each module's inputs over ``batches``, measured independently of the library."""
    sums = {name: 0.0 for name in modules}
    handles = [
        module.register_forward_hook(lambda m, args, out, name=name: sums.__setitem__(name, sums[name] + args[0].reshape(-1, args[0].shape[-1]).square().sum(0)))
        for name, module in modules.items()
    ]
    with torch.no_grad():
        for batch in batches:
            model(batch[0] if isinstance(batch, tuple) else batch)
    for handle in handles:
        handle.remove()
    return {name: total.sqrt() for name, total in sums.items()}


def correlated_inputs(tokens: int = 512, features: int = 64, seed: int = 0) -> torch.Tensor:
    """Inputs with strongly correlated features and unequal scales, as activations in a transformer are."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(tokens, 8, generator=generator)
    mixing = torch.randn(8, features, generator=generator)
    scales = torch.logspace(-1, 1, features)[torch.randperm(features, generator=generator)]
    return (latent @ mixing + 0.1 * torch.randn(tokens, features, generator=generator)) * scales


# -- Wanda ---------------------------------------------------------------------------------------


def test_wanda_keeps_by_weight_times_input_norm_where_magnitude_would_not():
    model = TinyStack(4, 1)
    with torch.no_grad():
        model.layers[0][0].weight.copy_(torch.tensor([[4.0, 3.0, 2.0, 1.0]]).repeat(4, 1))
    scales = torch.tensor([0.01, 1.0, 1.0, 10.0])  # feature 0 is nearly silent, feature 3 loud
    batches = [torch.randn(8, 4, generator=torch.Generator().manual_seed(i)).sign() * scales for i in range(3)]
    masks = pa.llm.wanda_prune(model, batches, 0.5)
    # |W| * ||X|| per row: 4*0.01, 3*1, 2*1, 1*10 -> keep inputs 1 and 3; magnitude would keep 0 and 1
    expected = torch.tensor([False, True, False, True]).repeat(4, 1)
    assert torch.equal(masks["layers.0.0.weight"], expected)
    assert torch.equal(model.layers[0][0].weight != 0, expected)


@pytest.mark.parametrize("sparsity", [0.5, 0.25])
def test_wanda_on_llama_prunes_every_row_exactly_and_ranks_by_input_norm(sparsity):
    model, batches = tiny_llama(), token_batches()
    dense = {name: m.weight.detach().clone() for name, m in block_linears(model).items()}
    first_block = {name: m for name, m in block_linears(model).items() if ".layers.0." in name}
    norms = dense_input_norms(model, first_block, batches)  # block 0 sees dense inputs either way
    embeddings, head = model.model.embed_tokens.weight.detach().clone(), model.lm_head.weight.detach().clone()

    masks = pa.llm.wanda_prune(model, batches, sparsity)

    assert set(masks) == set(dense)
    for name, module in block_linears(model).items():
        zeros_per_row = (module.weight == 0).sum(1)
        assert torch.equal(zeros_per_row, torch.full_like(zeros_per_row, round(sparsity * module.in_features))), name
        assert torch.equal(masks[name], module.weight != 0)
    for name, norm in norms.items():
        scores = dense[name].abs() * norm
        cutoff = scores.masked_fill(~masks[name], float("inf")).min(1).values  # lowest kept score per row
        assert (scores.masked_fill(masks[name], float("-inf")).max(1).values <= cutoff).all(), name
    assert torch.equal(model.model.embed_tokens.weight, embeddings) and torch.equal(model.lm_head.weight, head)


def test_later_blocks_are_pruned_from_inputs_through_the_pruned_blocks_before_them():
    torch.manual_seed(0)
    model = TinyStack(16, 2)
    reference = TinyStack(16, 2)
    reference.load_state_dict(model.state_dict())
    batches = [torch.randn(32, 16) for _ in range(2)]
    inputs = torch.cat(batches)
    target = parse_target(0.5)

    masks = pa.llm.wanda_prune(model, batches, 0.5)

    with torch.no_grad():
        first, second = reference.layers[0][0], reference.layers[1][0]
        dense_hidden = reference.layers[0](inputs)
        first.weight.mul_(row_wise_keep(pa.llm.wanda_scores(first.weight, inputs.norm(dim=0)), target))
        pruned_hidden = reference.layers[0](inputs)
    expected = row_wise_keep(pa.llm.wanda_scores(second.weight, pruned_hidden.norm(dim=0)), target)
    from_dense = row_wise_keep(pa.llm.wanda_scores(second.weight, dense_hidden.norm(dim=0)), target)
    assert torch.equal(masks["layers.1.0.weight"], expected)
    assert not torch.equal(expected, from_dense)  # the case tells sequential from dense calibration apart


# -- 2:4 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prune", [pa.llm.wanda_prune, pa.llm.sparsegpt_prune], ids=["wanda", "sparsegpt"])
def test_two_four_leaves_exactly_two_nonzeros_in_every_group(prune):
    model = tiny_llama()
    masks = prune(model, token_batches(), "2:4")
    for name, module in block_linears(model).items():
        groups = (module.weight != 0).reshape(-1, 4).sum(1)
        assert torch.equal(groups, torch.full_like(groups, 2)), name
        assert torch.equal(masks[name], module.weight != 0)


# -- SparseGPT -----------------------------------------------------------------------------------


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    return float((inputs @ weight.T - inputs @ pruned.T).norm())


@pytest.mark.parametrize("sparsity", [0.5, "2:4"])
def test_sparsegpt_reconstructs_layer_outputs_better_than_magnitude_and_wanda(sparsity):
    inputs = correlated_inputs()
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(3))
    statistics = InputStatistics(64, hessian=True)
    statistics.add(inputs)
    target = parse_target(sparsity)

    solved = weight.clone()
    keep = pa.llm.sparsegpt_prune_weight(solved, statistics.hessian(), target)
    magnitude = weight * row_wise_keep(weight.abs(), target)
    wanda = weight * row_wise_keep(pa.llm.wanda_scores(weight, statistics.feature_norms()), target)

    assert int((~keep).sum()) == int((solved == 0).sum()) == weight.numel() // 2
    sparsegpt_error = reconstruction_error(weight, solved, inputs)
    assert sparsegpt_error < reconstruction_error(weight, wanda, inputs) < reconstruction_error(weight, magnitude, inputs)


def test_sparsegpt_handles_dead_and_collinear_input_features():
    inputs = correlated_inputs(features=32)
    inputs[:, :6] = 0.0  # dead features: H has zero rows and columns
    inputs[:, 6] = inputs[:, 7]  # duplicated feature: H singular even without the dead ones
    statistics = InputStatistics(32, hessian=True)
    statistics.add(inputs)
    weight = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.cholesky(statistics.hessian().double())
    keep = pa.llm.sparsegpt_prune_weight(weight, statistics.hessian(), parse_target(0.5))
    assert torch.isfinite(weight).all()
    assert (weight[:, :6] == 0).all() and not keep[:, :6].any()  # weights on dead inputs are pruned first
    assert int((weight == 0).sum()) == weight.numel() // 2


def test_sparsegpt_layer_sparsity_is_exact_with_uneven_column_blocks():
    statistics = InputStatistics(40, hessian=True)
    statistics.add(correlated_inputs(features=40))
    weight = torch.randn(7, 40, generator=torch.Generator().manual_seed(1))
    pa.llm.sparsegpt_prune_weight(weight, statistics.hessian(), parse_target(0.3), block_size=16)
    assert int((weight == 0).sum()) == round(0.3 * weight.numel())


# -- statistics ----------------------------------------------------------------------------------


def test_padding_tokens_are_left_out_of_the_statistics():
    real = torch.randn(2, 3, 4)
    padded = torch.cat([real, torch.full((2, 2, 4), 100.0)], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 2)
    with_mask, reference = InputStatistics(4, hessian=True), InputStatistics(4, hessian=True)
    with_mask.add(padded, mask)
    reference.add(real)
    assert with_mask.tokens == reference.tokens == 6
    assert torch.allclose(with_mask.feature_norms(), reference.feature_norms())
    assert torch.allclose(with_mask.hessian(), reference.hessian())


# -- continuing with a Pruner --------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.5, "2:4"])
def test_pruner_continues_from_one_shot_masks_and_keeps_them_while_training(sparsity):
    model = tiny_llama()
    masks = pa.llm.sparsegpt_prune(model, token_batches(), sparsity)
    before = {name: m.weight.detach().clone() for name, m in block_linears(model).items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    pruner = pa.Pruner(model, optimizer, pa.llm.sparse_finetune(sparsity), total_steps=3)
    assert set(pruner.params) == set(masks)
    assert all(torch.equal(pruner.masks[name], mask) for name, mask in masks.items())  # nothing more removed
    model.train()
    for ids in token_batches(3, seed=5):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, module in block_linears(model).items():
        assert torch.equal(module.weight != 0, masks[name]), name
        assert not torch.equal(module.weight, before[name])  # the survivors trained
    assert pruner.summary().sparsity == pytest.approx(0.5, abs=1e-6)


def test_wanda_criterion_scores_inside_a_pruner_recipe():
    model = tiny_llama()
    batches = [(ids, ids) for ids in token_batches()]
    linears = block_linears(model)
    norms = dense_input_norms(model, linears, batches)
    dense = {name: m.weight.detach().clone() for name, m in linears.items()}
    recipe = {
        "pruning": {"criterion": "wanda", "granularity": "2:4", "schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}},
        "scope": {"modules": ["Linear"], "include": ["model.layers.*"], "skip_last": False},
    }
    pruner = pa.Pruner(model, None, recipe, total_steps=1, calibration_data=batches)
    target = parse_target("2:4")
    for name, norm in norms.items():
        assert torch.equal(pruner.masks[name], row_wise_keep(dense[name].abs() * norm, target)), name
    with pytest.raises(ConfigError, match="calibration"):
        pa.Pruner(tiny_llama(), None, recipe, total_steps=1)


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan"), "4:4", "2:x", "0.5", True, None])
def test_bad_targets_are_config_errors(value):
    with pytest.raises(ConfigError):
        parse_target(value)


@pytest.mark.parametrize("calibration", [None, [], torch.zeros(4, 16, dtype=torch.long)], ids=["none", "empty", "one-tensor"])
def test_missing_calibration_data_is_a_config_error(calibration):
    with pytest.raises(ConfigError, match="calibration"):
        pa.llm.wanda_prune(tiny_llama(), calibration, 0.5)


def test_bad_blocks_nm_and_solver_options_fail_before_any_pruning():
    model = tiny_llama()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(ConfigError, match="blocks"):
        pa.llm.wanda_prune(model, token_batches(), 0.5, blocks="model.nope")
    with pytest.raises(ConfigError, match="divisible by M=8"):
        pa.llm.sparsegpt_prune(TinyStack(12, 1), [torch.randn(4, 12)], "2:8")
    with pytest.raises(ConfigError, match="damping"):
        pa.llm.sparsegpt_prune(model, token_batches(), 0.5, damping=-1.0)
    with pytest.raises(ConfigError, match="block_size"):
        pa.llm.sparsegpt_prune(model, token_batches(), 0.5, block_size=0)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


# -- perplexity ----------------------------------------------------------------------------------


class UniformLM(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, self.vocab)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    windows = pa.llm.spaced_windows(torch.arange(1000) % 50, 20, 7)
    assert windows.shape == (7, 20) and windows[0, 0] == 0 and windows[-1, -1] == 999 % 50
    assert pa.llm.perplexity(UniformLM(50), windows, batch_size=3) == pytest.approx(50.0, rel=1e-5)
    with pytest.raises(ConfigError, match="tokens"):
        pa.llm.spaced_windows(torch.arange(10), 20, 2)
