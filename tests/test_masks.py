"""MaskSet: masks start from nonzeros, only ever zero masked entries, and checkpoint exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneaware.errors import StateError
from pruneaware.masks import MaskSet


def make_params(seed: int = 0) -> dict[str, nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "a.weight": nn.Parameter(torch.randn(5, 6, generator=generator)),
        "b.weight": nn.Parameter(torch.randn(4, 3, 2, 2, generator=generator)),
    }


def random_masks(params, seed: int = 1, keep: float = 0.5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(p.shape, generator=generator) < keep for name, p in params.items()}


def test_starts_from_current_nonzeros():
    params = make_params()
    with torch.no_grad():
        params["a.weight"][0].zero_()
        params["b.weight"][:, 1].zero_()
    masks = MaskSet(params)
    assert list(masks) == ["a.weight", "b.weight"]
    for name, param in params.items():
        assert masks[name].dtype == torch.bool
        assert torch.equal(masks[name], param.detach() != 0)
    assert masks.kept("a.weight") == 24
    assert masks.kept("b.weight") == 48 - 16
    assert masks.sparsity() == pytest.approx((6 + 16) / 78)


def test_dense_maskset_leaves_weights_and_gradients_alone():
    params = make_params()
    before = {n: p.detach().clone() for n, p in params.items()}
    masks = MaskSet(params)
    assert masks.sparsity() == 0.0
    for p in params.values():
        p.grad = torch.ones_like(p)
    masks.apply_()
    masks.mask_gradients_()
    for n, p in params.items():
        assert torch.equal(p.detach(), before[n])
        assert torch.equal(p.grad, torch.ones_like(p))


def test_update_zeroes_newly_pruned_weights_only():
    params = make_params()
    before = {n: p.detach().clone() for n, p in params.items()}
    masks = MaskSet(params)
    new = random_masks(params)
    masks.update(new)
    for name, param in params.items():
        assert torch.equal(masks[name], new[name])
        assert bool((param[~new[name]] == 0).all())
        assert torch.equal(param.detach()[new[name]], before[name][new[name]])
    assert masks.sparsity() == pytest.approx(1 - sum(int(m.sum()) for m in new.values()) / 78)


def test_partial_update_keeps_other_masks():
    params = make_params()
    masks = MaskSet(params)
    first = random_masks(params, seed=1)
    masks.update(first)
    second = torch.rand(params["a.weight"].shape) < 0.3
    masks.update({"a.weight": second})
    assert torch.equal(masks["a.weight"], second)
    assert torch.equal(masks["b.weight"], first["b.weight"])


def test_update_accepts_non_bool_masks_as_bool():
    params = make_params()
    masks = MaskSet(params)
    masks.update({"a.weight": torch.zeros(5, 6, dtype=torch.float32)})
    assert masks["a.weight"].dtype == torch.bool
    assert bool((params["a.weight"] == 0).all())


def test_apply_zeroes_exactly_the_masked_entries():
    params = make_params()
    masks = MaskSet(params)
    new = random_masks(params)
    masks.update(new)
    with torch.no_grad():  # an optimizer step moves every weight
        for p in params.values():
            p.add_(1.0)
    moved = {n: p.detach().clone() for n, p in params.items()}
    masks.apply_()
    for name, param in params.items():
        assert bool((param[~new[name]] == 0).all())
        assert torch.equal(param.detach()[new[name]], moved[name][new[name]])


def test_mask_gradients_zeroes_exactly_the_masked_entries():
    params = make_params()
    masks = MaskSet(params)
    new = random_masks(params)
    masks.update(new)
    grads = {}
    for name, p in params.items():
        p.grad = torch.randn(p.shape) + 5.0
        grads[name] = p.grad.clone()
    params["b.weight"].grad = None  # parameters without gradients are skipped
    masks.mask_gradients_()
    a = params["a.weight"].grad
    assert bool((a[~new["a.weight"]] == 0).all())
    assert torch.equal(a[new["a.weight"]], grads["a.weight"][new["a.weight"]])
    assert params["b.weight"].grad is None


def test_enforcement_does_not_record_autograd_history():
    params = make_params()
    masks = MaskSet(params)
    masks.update(random_masks(params))
    masks.apply_()
    for p in params.values():
        assert p.grad_fn is None and p.requires_grad and p.is_leaf


def test_update_rejects_unknown_name_and_wrong_shape():
    params = make_params()
    masks = MaskSet(params)
    with pytest.raises(StateError) as error:
        masks.update({"c.weight": torch.ones(5, 6, dtype=torch.bool)})
    assert "'c.weight'" in str(error.value) and "a.weight" in str(error.value)
    with pytest.raises(StateError) as error:
        masks.update({"a.weight": torch.ones(6, 5, dtype=torch.bool)})
    assert "(6, 5)" in str(error.value) and "(5, 6)" in str(error.value)


def test_state_dict_round_trip():
    params = make_params()
    masks = MaskSet(params)
    masks.update(random_masks(params))
    state = masks.state_dict()
    assert set(state) == set(params)
    for name in params:
        assert state[name].dtype == torch.bool and torch.equal(state[name], masks[name])
        assert state[name] is not masks[name]
    fresh_params = make_params()
    fresh = MaskSet(fresh_params)
    fresh.load_state_dict(state)
    for name, param in fresh_params.items():
        assert torch.equal(fresh[name], masks[name])
        assert bool((param[~state[name]] == 0).all()), "loading masks enforces them on the weights"
    assert fresh.sparsity() == pytest.approx(masks.sparsity())


def test_state_dict_is_a_snapshot():
    params = make_params()
    masks = MaskSet(params)
    state = masks.state_dict()
    masks.update(random_masks(params))
    assert all(bool(m.all()) for m in state.values())


def test_load_state_dict_rejects_mismatches():
    params = make_params()
    masks = MaskSet(params)
    good = masks.state_dict()
    missing = {"a.weight": good["a.weight"]}
    with pytest.raises(StateError) as error:
        masks.load_state_dict(missing)
    assert "b.weight" in str(error.value)
    with pytest.raises(StateError) as error:
        masks.load_state_dict({**good, "c.weight": good["a.weight"]})
    assert "c.weight" in str(error.value)
    with pytest.raises(StateError) as error:
        masks.load_state_dict({**good, "a.weight": good["a.weight"].float()})
    assert "a.weight" in str(error.value) and "bool" in str(error.value)
    with pytest.raises(StateError):
        masks.load_state_dict({**good, "a.weight": torch.ones(3, 3, dtype=torch.bool)})
    assert all(bool(masks[n].all()) for n in masks), "a rejected state leaves masks unchanged"


def test_a_rejected_update_changes_nothing():
    params = make_params()
    masks = MaskSet(params)
    before = {n: p.detach().clone() for n, p in params.items()}
    bad = {"a.weight": torch.zeros(5, 6, dtype=torch.bool), "b.weight": torch.zeros(2, 2, dtype=torch.bool)}
    with pytest.raises(StateError):
        masks.update(bad)
    with pytest.raises(StateError):
        masks.load_state_dict(bad)
    with pytest.raises(StateError):
        masks.update({"a.weight": torch.zeros(5, 6, dtype=torch.bool), "z.weight": torch.zeros(1, dtype=torch.bool)})
    assert all(bool(masks[n].all()) for n in masks)
    assert masks.sparsity() == 0.0
    masks.apply_()
    for n, p in params.items():
        assert torch.equal(p.detach(), before[n])
