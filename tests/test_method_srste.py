"""N:M with SR-STE: sparse forward, straight-through gradients plus the refine term, patterns that move."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from pruneaware import ConfigError, Pruner, Recipe, methods
from pruneaware.granularity import input_major

STEPS = 40
DECAY = 2e-2


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3))
        return self.head(torch.relu(self.fc(x)))


def make_batches(steps: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, 7, 7, generator=generator), torch.randint(0, 3, (8,), generator=generator)) for _ in range(steps)]


def make_run(recipe: Recipe | None = None) -> tuple[nn.Module, torch.optim.Optimizer, Pruner]:
    torch.manual_seed(0)
    model = CNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    pruner = Pruner(model, optimizer, recipe or methods.sr_ste(2, 4, decay=DECAY), total_steps=STEPS)
    return model, optimizer, pruner


def step(model, optimizer, x, y) -> None:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def assert_n_of_m(pruner: Pruner, n: int = 2, m: int = 4) -> None:
    for name, param in pruner.params.items():
        groups = input_major(param.detach()).reshape(-1, m)
        assert bool(((groups != 0).sum(1) == n).all()), name  # every group, not an average
        assert torch.equal(param.detach() != 0, pruner.masks[name]), name


def test_every_group_holds_exactly_n_nonzeros_after_every_step():
    model, optimizer, pruner = make_run()
    assert_n_of_m(pruner)  # from the first forward on
    for x, y in make_batches():
        step(model, optimizer, x, y)
        assert_n_of_m(pruner)
    pruner.finalize()
    assert_n_of_m(pruner)


def test_pruned_positions_move_during_training_unlike_plain_nm_masks():
    model, optimizer, pruner = make_run()
    first = {name: pruner.masks[name].clone() for name in pruner.masks}
    changed_per_step = []
    for x, y in make_batches():
        before = {name: pruner.masks[name].clone() for name in pruner.masks}
        step(model, optimizer, x, y)
        changed_per_step.append(sum(int((before[name] != pruner.masks[name]).sum()) for name in before))
    assert sum(int((first[name] != pruner.masks[name]).sum()) for name in first) > 0
    assert sum(1 for changed in changed_per_step if changed) > 1  # the pattern keeps following the weights

    plain = Recipe.from_dict({"pruning": {"granularity": "2:4", "schedule": {"type": "one_shot", "sparsity": 0.5, "at": 0, "unit": "step"}}})
    model, optimizer, pruner = make_run(plain)
    fixed = {name: pruner.masks[name].clone() for name in pruner.masks}
    for x, y in make_batches():
        step(model, optimizer, x, y)
    assert all(torch.equal(fixed[name], pruner.masks[name]) for name in fixed)


def test_dense_weights_get_the_straight_through_gradient_plus_the_refine_term():
    model, optimizer, pruner = make_run()
    batches = make_batches(3)
    for x, y in batches[:2]:
        step(model, optimizer, x, y)
    names = list(pruner.params)
    dense = {name: pruner.stage("regularizer").regularizer.shadow.dense[name].clone() for name in names}
    masks = {name: pruner.masks[name].clone() for name in names}
    sparse = {name: (dense[name] * masks[name]).requires_grad_() for name in names}
    x, y = batches[2]
    loss_grads = torch.autograd.grad(F.cross_entropy(functional_call(model, sparse, (x,)), y), list(sparse.values()))

    seen = {}

    def capture(optimizer, args, kwargs):
        seen.update({name: (pruner.params[name].grad.clone(), pruner.params[name].detach().clone()) for name in names})

    handle = optimizer.register_step_pre_hook(capture)  # runs after the pruner's own pre-step hook
    step(model, optimizer, x, y)
    handle.remove()
    for name, loss_grad in zip(names, loss_grads):
        grad, value = seen[name]
        assert bool((loss_grad[~masks[name]] != 0).any())  # pruned weights do get gradient
        torch.testing.assert_close(grad, loss_grad + DECAY * dense[name] * ~masks[name])
        assert torch.equal(value, dense[name])  # the optimizer steps the dense weights


def test_pruned_dense_weights_keep_training_and_decay():
    model, optimizer, pruner = make_run()
    dense_before = {name: pruner.stage("regularizer").regularizer.shadow.dense[name].clone() for name in pruner.params}
    masks_before = {name: pruner.masks[name].clone() for name in pruner.params}
    step(model, optimizer, *make_batches(1)[0])
    for name in pruner.params:
        pruned = ~masks_before[name]
        assert bool((pruner.stage("regularizer").regularizer.shadow.dense[name][pruned] != dense_before[name][pruned]).all()), name


def test_resume_from_checkpoint_is_bit_exact():
    batches = make_batches(20)
    model_a, optimizer_a, pruner_a = make_run()
    for x, y in batches[:8]:
        step(model_a, optimizer_a, x, y)
    state = copy.deepcopy({"model": model_a.state_dict(), "optimizer": optimizer_a.state_dict(), "pruner": pruner_a.state_dict()})
    for x, y in batches[8:]:
        step(model_a, optimizer_a, x, y)

    model_b, optimizer_b, pruner_b = make_run()
    pruner_b.load_state_dict(state["pruner"])
    model_b.load_state_dict(state["model"])
    optimizer_b.load_state_dict(state["optimizer"])
    for x, y in batches[8:]:
        step(model_b, optimizer_b, x, y)
    for (name, a), (_, b) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.equal(a, b), name
    for name in pruner_a.params:
        assert torch.equal(pruner_a.stage("regularizer").regularizer.shadow.dense[name], pruner_b.stage("regularizer").regularizer.shadow.dense[name])


def test_bad_configurations_raise_config_errors():
    with pytest.raises(ConfigError, match="divisible by M=4"):
        Pruner(nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 2)), None, methods.sr_ste(2, 4))
    with pytest.raises(ConfigError, match="decides the masks itself"):
        Recipe.from_dict({"regularizer": {"type": "sr_ste"}, "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5}}})
    with pytest.raises(ConfigError, match="decay"):
        Recipe.from_dict({"regularizer": {"type": "sr_ste", "decay": -1.0}})
    assert methods.sr_ste(1, 4).regularizer.n == 1
