"""MaskSet: masks start from nonzeros, only ever zero masked entries, and checkpoint exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pruneaware.core.errors import StateError
from pruneaware.core.masks import MaskSet


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


def test_only_masks_that_prune_are_enforced_and_a_mask_update_changes_which():
    params = make_params()
    masks = MaskSet(params)
    a_mask = random_masks(params)["a.weight"]
    masks.update({"a.weight": a_mask})
    assert masks.sparsity() > 0
    with torch.no_grad():
        params["b.weight"][0, 1, 0, 0] = float("inf")  # a full mask's weights and gradients pass untouched: not even inf * 1
    params["a.weight"].grad = torch.full((5, 6), 2.0)
    params["b.weight"].grad = torch.full((4, 3, 2, 2), float("nan"))
    untouched = params["b.weight"].grad._version
    masks.mask_gradients_()
    masks.apply_()
    assert params["b.weight"].grad._version == untouched, "a full mask costs no pass over its gradient"
    assert bool(params["b.weight"].grad.isnan().all())
    assert params["b.weight"][0, 1, 0, 0] == float("inf")
    assert bool((params["a.weight"].grad[~a_mask] == 0).all()) and bool((params["a.weight"].grad[a_mask] == 2).all())

    b_mask = torch.ones(4, 3, 2, 2, dtype=torch.bool)
    b_mask[:, 0] = False
    masks.update({"b.weight": b_mask, "a.weight": torch.ones(5, 6, dtype=torch.bool)})  # b now prunes, a keeps everything
    with torch.no_grad():
        for p in params.values():
            p.add_(1.0)
    for p in params.values():
        p.grad = torch.ones_like(p)
    masks.mask_gradients_()
    masks.apply_()
    assert bool((params["b.weight"][:, 0] == 0).all()) and bool((params["b.weight"].grad[:, 0] == 0).all())
    assert bool((params["a.weight"] != 0).all()), "a full mask no longer holds the weights it used to prune"
    assert torch.equal(params["a.weight"].grad, torch.ones(5, 6))
    masks.update({"b.weight": torch.ones(4, 3, 2, 2, dtype=torch.bool)})
    assert masks.sparsity() == 0.0
    with torch.no_grad():
        params["b.weight"].add_(1.0)
    masks.apply_()
    assert bool((params["b.weight"] != 0).all())


def _adamw_training(params, masks, steps: int, update_at: int | None = None, later=None):
    """Train ``params`` toward random targets with AdamW (weight decay) the way a Pruner drives it; yield after each step."""
    optimizer = torch.optim.AdamW(params.values(), lr=0.05, weight_decay=0.1)
    generator = torch.Generator().manual_seed(3)
    targets = {name: torch.randn(p.shape, generator=generator) for name, p in params.items()}
    for step in range(steps):
        loss = sum(((p - targets[name]) ** 2).sum() for name, p in params.items())
        optimizer.zero_grad()
        loss.backward()
        masks.mask_gradients_()
        yield optimizer
        optimizer.step()
        masks.apply_()
        if step == update_at:
            masks.update(later)


def test_adamw_with_weight_decay_keeps_pruned_weights_and_their_statistics_exactly_zero():
    """Masked gradients never reach the optimizer: pruned entries of Adam's moments stay exactly zero (and cost
    AdamW's sqrt over zeros every step, see docs/benchmarks.md), and pruned weights stay exactly zero."""
    params = make_params()
    masks = MaskSet(params)
    keep = random_masks(params, keep=0.1)
    masks.update(keep)
    for optimizer in _adamw_training(params, masks, steps=25):
        for name, param in params.items():
            assert bool((param.grad[~keep[name]] == 0).all())
            assert bool((param.detach()[~keep[name]] == 0).all())
            state = optimizer.state.get(param)
            if state:
                assert bool((state["exp_avg"][~keep[name]] == 0).all()) and bool((state["exp_avg_sq"][~keep[name]] == 0).all())
    for name, param in params.items():
        assert bool((param.detach()[keep[name]] != 0).all()), "kept weights trained"


def test_weights_pruned_mid_training_stay_zero_although_adam_would_still_move_them():
    params = make_params()
    masks = MaskSet(params)
    later = random_masks(params, keep=0.3)
    moved = []
    for optimizer in _adamw_training(params, masks, steps=12, update_at=5, later=later):
        if masks.sparsity() == 0:
            continue
        for name, param in params.items():
            assert bool((param.detach()[~later[name]] == 0).all())
            moved.append(bool((optimizer.state[param]["exp_avg"][~later[name]] != 0).any()))
    assert moved and all(moved), "the first moment of newly pruned weights decays but is not zero: re-zeroing after each step is needed"
