"""Granularities: element (layer/global), blocks and N:M, from scores to keep-masks."""

from __future__ import annotations

import math

import pytest
import torch

from pruneaware.core.errors import ConfigError
from pruneaware.granularity import NM, Block, Element, input_major


def scores_for(*shapes, seed: int = 0, scales=None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scales = scales or [1.0] * len(shapes)
    return {f"l{i}.weight": torch.rand(shape, generator=generator) * scale for i, (shape, scale) in enumerate(zip(shapes, scales))}


def removed(mask: torch.Tensor) -> int:
    return int((~mask).sum())


# -- element ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.33, 0.5, 0.9, 0.99])
def test_element_layer_removes_round_s_n_in_every_layer(sparsity):
    scores = scores_for((10, 7), (3, 5, 3, 3), (13,), (1, 1))
    if sparsity >= 0.5:  # the 1-weight layer (and the 13-weight one at 0.99) would lose every weight: refused, see below
        scores = scores_for((10, 7), (3, 5, 3, 3), (13,) if sparsity < 0.99 else (130,))
    masks = Element(scope="layer").masks(scores, sparsity)
    assert masks.keys() == scores.keys()
    for name, score in scores.items():
        mask = masks[name]
        assert mask.dtype == torch.bool and mask.shape == score.shape
        assert removed(mask) == round(sparsity * score.numel())


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_element_layer_keeps_highest_scores_per_layer(sparsity):
    scores = scores_for((10, 7), (3, 5, 3, 3), scales=[1.0, 100.0])
    masks = Element(scope="layer").masks(scores, sparsity)
    for name, score in scores.items():
        kept, pruned = score[masks[name]], score[~masks[name]]
        assert kept.min() >= pruned.max()


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.8, 0.95])
def test_element_global_removes_round_s_total_overall(sparsity):
    scores = scores_for((10, 7), (3, 5, 3, 3), (13,), scales=[1.0, 3.0, 0.2])
    masks = Element(scope="global").masks(scores, sparsity)
    total = sum(s.numel() for s in scores.values())
    assert sum(removed(m) for m in masks.values()) == round(sparsity * total)
    kept = torch.cat([s[masks[n]] for n, s in scores.items()])
    pruned = torch.cat([s[~masks[n]] for n, s in scores.items()])
    assert kept.min() >= pruned.max()


def test_element_global_layer_sparsities_follow_the_scale_of_each_layer():
    scores = scores_for((20, 20), (20, 20), (20, 20), scales=[0.1, 1.0, 10.0])
    masks = Element(scope="global").masks(scores, 0.5)
    sparsities = [removed(m) / m.numel() for m in masks.values()]
    assert sum(removed(m) for m in masks.values()) == 600
    assert sparsities[0] > sparsities[1] > sparsities[2]
    assert sparsities[0] == 1.0  # every score of the smallest layer is below every other score
    layer = Element(scope="layer").masks(scores, 0.5)
    assert all(removed(m) == 200 for m in layer.values())


def test_element_ties_are_resolved_to_the_exact_count():
    scores = {"w": torch.zeros(10, 10)}
    for scope in ("layer", "global"):
        assert removed(Element(scope=scope).masks(scores, 0.37)["w"]) == 37


def test_minus_infinity_scores_are_pruned_first():
    score = torch.rand(8, 8)
    score[0] = float("-inf")
    mask = Element(scope="layer").masks({"w": score}, 0.25)["w"]
    assert not mask[0].any()
    assert removed(mask) == 16


def test_element_invalid_arguments():
    with pytest.raises(ConfigError) as error:
        Element(scope="model")
    assert "granularity.scope" in str(error.value) and "'global'" in str(error.value)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError):
            Element().masks(scores_for((4, 4)), bad)


# -- blocks --------------------------------------------------------------------------------------


def assert_block_constant(mask: torch.Tensor, block: tuple[int, int]) -> None:
    matrix = mask.reshape(mask.shape[0], -1)
    rows, cols = matrix.shape
    for r in range(0, rows, block[0]):
        for c in range(0, cols, block[1]):
            tile = matrix[r : r + block[0], c : c + block[1]]
            assert bool(tile.all()) or not bool(tile.any()), f"block at ({r}, {c}) is mixed"


BLOCK_SHAPES = [(1, 4), (4, 4), (2, 3)]
PARAM_SHAPES = [(16, 32), (10, 14), (8, 4, 3, 3), (6, 3, 3, 3), (5, 7, 5)]


@pytest.mark.parametrize("block", BLOCK_SHAPES)
@pytest.mark.parametrize("shape", PARAM_SHAPES)
@pytest.mark.parametrize("sparsity", [0.3, 0.75, 0.9])
def test_block_layer_masks_are_constant_over_blocks_and_near_the_target(block, shape, sparsity):
    score = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    mask = Block(scope="layer", shape=block).masks({"w": score}, sparsity)["w"]
    assert mask.shape == score.shape and mask.dtype == torch.bool
    assert_block_constant(mask, block)
    target = round(sparsity * score.numel())
    assert target - math.prod(block) < removed(mask) <= target


@pytest.mark.parametrize("block", [(1, 4), (4, 4)])
def test_block_global_masks(block):
    scores = scores_for((16, 32), (10, 14), (8, 4, 3, 3), scales=[1.0, 5.0, 0.3])
    sparsity = 0.6
    masks = Block(scope="global", shape=block).masks(scores, sparsity)
    for name, mask in masks.items():
        assert_block_constant(mask, block)
    total = sum(s.numel() for s in scores.values())
    target = round(sparsity * total)
    assert target - math.prod(block) < sum(removed(m) for m in masks.values()) <= target


@pytest.mark.parametrize("block", [(1, 4), (4, 4)])
def test_block_keeps_the_blocks_with_highest_mean_score(block):
    score = torch.rand(8, 16, generator=torch.Generator().manual_seed(2))
    mask = Block(scope="layer", shape=block).masks({"w": score}, 0.5)["w"]
    means = torch.nn.functional.avg_pool2d(score[None, None], block)[0, 0]
    keep = torch.nn.functional.max_pool2d(mask.float()[None, None], block)[0, 0].bool()
    assert means[keep].min() >= means[~keep].max()


def test_block_ragged_edge_is_ranked_by_its_mean():
    score = torch.ones(1, 6)
    score[0, 4:] = 0.5  # the ragged last block of width 2 has the lowest mean
    mask = Block(scope="layer", shape=(1, 4)).masks({"w": score}, 1 / 3)["w"]
    assert mask.tolist() == [[True] * 4 + [False] * 2]


def test_blocks_are_ranked_by_mean_not_sum():
    # middle block: mean 0.3, sum 1.2; ragged block: mean 0.5, sum 1.0 -> the middle block goes
    score = torch.tensor([[1.0] * 4 + [0.3] * 4 + [0.5] * 2])
    mask = Block(scope="layer", shape=(1, 4)).masks({"w": score}, 0.4)["w"]
    assert mask.tolist() == [[True] * 4 + [False] * 4 + [True] * 2]


def test_block_invalid_shape():
    for bad in ((0, 4), (4,), (1, 2, 3)):
        with pytest.raises(ConfigError) as error:
            Block(shape=bad)
        assert "granularity.shape" in str(error.value)


# -- N:M --------------------------------------------------------------------------------------------


def groups_of(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """Groups of ``m`` consecutive input channels: dim 1 at fixed output and kernel position."""
    if tensor.dim() == 2:
        return tensor.reshape(tensor.shape[0], -1, m).reshape(-1, m)
    moved = tensor.movedim(1, -1)  # (out, *kernel, in)
    return moved.reshape(-1, m)


NM_SHAPES = [(8, 16), (6, 8, 3, 3), (4, 12, 5), (3, 4, 2, 2, 2)]


NM_CASES = [(shape, n, m) for shape in NM_SHAPES for n, m in [(2, 4), (1, 4), (3, 4), (4, 8), (1, 2)] if shape[1] % m == 0]


@pytest.mark.parametrize("shape,n,m", NM_CASES)
def test_nm_keeps_exactly_n_highest_per_group(shape, n, m):
    score = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    granularity = NM(n, m)
    mask = granularity.masks({"w": score}, 1 - n / m)["w"]
    assert mask.shape == score.shape and mask.dtype == torch.bool
    mask_groups, score_groups = groups_of(mask, m), groups_of(score, m)
    assert bool((mask_groups.sum(1) == n).all())
    kept = score_groups.masked_fill(~mask_groups, float("inf")).min(1).values
    pruned = score_groups.masked_fill(mask_groups, float("-inf")).max(1).values
    assert bool((kept >= pruned).all())


def test_nm_groups_run_along_input_channels_of_a_conv():
    # Along input channels the scores alternate high/low, along the kernel they do not:
    # a correct 2:4 keeps the two high channels at every kernel position.
    score = torch.zeros(2, 4, 3, 3)
    score[:, [0, 2]] = 1.0
    score += torch.linspace(0, 0.5, 9).reshape(1, 1, 3, 3)
    mask = NM(2, 4).masks({"w": score}, 0.5)["w"]
    assert bool(mask[:, [0, 2]].all()) and not bool(mask[:, [1, 3]].any())


def test_nm_groups_run_along_the_input_dim_of_a_linear():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 9.0, 8.0, 7.0]])
    mask = NM(2, 4).masks({"w": score}, 0.5)["w"]
    assert mask.tolist() == [[True, False, True, False, False, True, True, False]]


@pytest.mark.parametrize("shape", [(8, 16), (6, 8, 3, 3), (4, 12, 5)])
def test_gradual_nm_removes_fewer_per_group(shape):
    score = torch.rand(shape, generator=torch.Generator().manual_seed(4))
    granularity = NM(2, 4)
    for sparsity, kept in [(0.0, 4), (0.1, 4), (0.25, 3), (0.3, 3), (0.5, 2)]:
        mask = granularity.masks({"w": score}, sparsity)["w"]
        assert bool((groups_of(mask, 4).sum(1) == kept).all()), (sparsity, kept)


def test_nm_invalid_configurations():
    for n, m, field in [(4, 4, "granularity.n"), (5, 4, "granularity.n"), (0, 4, "granularity.n"), (1, 1, "granularity.m"), (0, 0, "granularity.m")]:
        with pytest.raises(ConfigError) as error:
            NM(n, m)
        assert field in str(error.value)
    with pytest.raises(ConfigError) as error:
        NM(2, 4).masks({"w": torch.rand(4, 8)}, 0.6)
    assert "sparsity" in str(error.value) and "0.6" in str(error.value) and "0.5" in str(error.value)
    with pytest.raises(ConfigError):
        NM(2, 4).masks({"w": torch.rand(4, 8)}, 1.0)


@pytest.mark.parametrize("shape", [(8, 6), (4, 6, 3, 3), (10,)])
def test_nm_check_rejects_input_dims_not_divisible_by_m(shape):
    with pytest.raises(ConfigError) as error:
        NM(2, 4).check("block.fc.weight", torch.zeros(shape))
    message = str(error.value)
    assert "2:4" in message and "block.fc.weight" in message and "block.fc" in message


@pytest.mark.parametrize("shape", [(8, 8), (4, 4, 3, 3), (2, 12, 5)])
def test_nm_check_accepts_divisible_shapes(shape):
    NM(2, 4).check("w", torch.zeros(shape))
    Element().check("w", torch.zeros(shape))
    Block().check("w", torch.zeros(shape))


def test_input_major_view():
    linear = torch.arange(6.0).reshape(2, 3)
    assert input_major(linear) is linear
    conv = torch.zeros(2, 3, 4, 5)
    assert input_major(conv).shape == (2, 4, 5, 3)


@pytest.mark.parametrize("scope", ["layer", "global", "erk"])
def test_a_target_that_rounds_to_every_weight_is_refused(scope):
    scores = {"a": torch.rand(10, 10), "b": torch.rand(10, 10)}
    with pytest.raises(ConfigError) as error:
        Element(scope).masks(scores, 0.9999999)
    assert error.value.field == "sparsity" and "keeps at least one" in str(error.value)


def test_a_layer_target_that_rounds_to_a_whole_small_layer_names_it():
    scores = {"big": torch.rand(100, 100), "tiny": torch.rand(2, 2)}
    with pytest.raises(ConfigError) as error:
        Element("layer").masks(scores, 0.9)
    assert "'tiny'" in str(error.value)
    kept = Element("global").masks(scores, 0.9)  # ranked together, one layer may go: that is what global asks
    assert sum(int(m.sum()) for m in kept.values()) == round(0.1 * 10004)


def test_a_block_larger_than_the_layer_is_refused():
    with pytest.raises(ConfigError) as error:
        Block(shape=(1000000, 1)).check("fc.weight", torch.zeros(8, 16))
    assert "'fc.weight'" in error.value.field


def test_blocks_too_coarse_for_the_target_say_so(caplog):
    scores = {"l": torch.rand(8, 8, generator=torch.Generator().manual_seed(0))}
    mask = Block(shape=(4, 8)).masks(scores, 0.9)["l"]  # two blocks of 32: only one can go, 50% where 90% is asked
    assert removed(mask) == 32
    assert "32 of 64 weights removed where sparsity 0.9000 asks 58" in caplog.text
