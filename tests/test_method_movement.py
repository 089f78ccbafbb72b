"""Movement pruning: hard (top-k of accumulated -w * dL/dw), top-k of learned scores (reversible), and soft (learned scores above a threshold)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.helpers import ThreeLayerMLP, random_batches
from pruneaware import ConfigError, Pruner, Recipe
from pruneaware.methods.movement import movement_pruning, soft_movement, topk_movement

STEPS = 40


def train(model: nn.Module, optimizer: torch.optim.Optimizer, pruner: Pruner, batches, start: int = 0, stop: int | None = None) -> None:
    for x, y in batches[start:stop]:
        loss = F.cross_entropy(model(x), y) + pruner.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


Run = tuple[nn.Module, torch.optim.Optimizer, Pruner]


def resumed_and_uninterrupted(start: Callable[[], Run], restart: Callable[[], Run], batches, stop_at: int) -> tuple[Pruner, Pruner]:
    """Train one run straight through and one stopped at ``stop_at``, saved, restored into ``restart()`` and finished;
    assert their final models are bit-identical and return both pruners (uninterrupted, resumed) for further checks."""
    model_a, optimizer_a, pruner_a = start()
    train(model_a, optimizer_a, pruner_a, batches)
    model_b, optimizer_b, pruner_b = start()
    train(model_b, optimizer_b, pruner_b, batches, stop=stop_at)
    state = copy.deepcopy({"model": model_b.state_dict(), "optimizer": optimizer_b.state_dict(), "pruner": pruner_b.state_dict()})
    model_c, optimizer_c, pruner_c = restart()
    pruner_c.load_state_dict(state["pruner"])
    model_c.load_state_dict(state["model"])
    optimizer_c.load_state_dict(state["optimizer"])
    train(model_c, optimizer_c, pruner_c, batches, start=stop_at)
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(a, c), name
    return pruner_a, pruner_c


def top_k_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[scores.flatten().topk(keep).indices] = True
    return mask.view_as(scores)


# -- hard movement --------------------------------------------------------------------------------


def test_hard_mask_is_the_top_k_of_accumulated_movement_not_of_magnitude():
    layer = nn.Linear(8, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -1.5, 1.2, -1.0, 0.3, -0.2, 0.25, -0.1]]))
    # the four large weights shrink toward zero, the four small ones grow away from it
    gradient = torch.tensor([[0.5, -0.5, 0.5, -0.5, -0.5, 0.5, -0.5, 0.5]])
    recipe = movement_pruning(0.5, begin=3, end=3, every=1, unit="step", allocation="layer", scope={"skip_last": False})
    pruner = Pruner(layer, None, recipe, total_steps=5)
    accumulated = torch.zeros_like(layer.weight)
    for _ in range(3):
        layer.weight.grad = gradient.clone()
        accumulated -= layer.weight.detach() * gradient
        pruner.before_step()
        with torch.no_grad():
            layer.weight -= 0.1 * layer.weight.grad
        magnitudes = layer.weight.detach().abs()  # what magnitude pruning would rank at this update
        pruner.step()
    by_movement, by_magnitude = top_k_mask(accumulated, 4), top_k_mask(magnitudes, 4)
    assert not torch.equal(by_movement, by_magnitude)  # the case tells the two criteria apart
    assert torch.equal(pruner.masks["weight"], by_movement)
    assert pruner.masks["weight"].flatten().tolist() == [False] * 4 + [True] * 4


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ThreeLayerMLP()


def test_hard_masks_follow_the_accumulated_scores_at_every_update_of_a_ramp():
    model, batches = mlp(), random_batches(STEPS, 20, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    accumulated = {name: torch.zeros_like(p) for name, p in model.named_parameters() if name in ("fc1.weight", "fc2.weight")}
    params = dict(model.named_parameters())

    def accumulate(optimizer, args, kwargs):  # registered before the pruner's hook: sees the gradients it sees
        for name, score in accumulated.items():
            score -= params[name].detach() * params[name].grad

    optimizer.register_step_pre_hook(accumulate)
    pruner = Pruner(model, optimizer, movement_pruning(0.8, begin=4, end=24, every=4, unit="step", allocation="layer"), total_steps=STEPS)
    survivors = {name: torch.ones_like(score, dtype=torch.bool) for name, score in accumulated.items()}
    for step, batch in enumerate(batches, start=1):
        train(model, optimizer, pruner, [batch])
        if pruner.stage("prune").schedule.is_update_step(step):
            for name, score in accumulated.items():
                keep = round(score.numel() * (1 - pruner.stage("prune").schedule.value_at(step)))
                expected = top_k_mask(score.masked_fill(~survivors[name], float("-inf")), keep)
                assert torch.equal(pruner.masks[name], expected), (step, name)
                survivors[name] = expected
    assert pruner.summary().sparsity == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize("stop_at", [3, 4, 13])
def test_hard_resume_mid_run_is_bit_identical(stop_at):
    recipe, batches = movement_pruning(0.8, begin=4, end=24, every=4, unit="step"), random_batches(STEPS, 20, 4)

    def run() -> Run:
        model = mlp()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        return model, optimizer, Pruner(model, optimizer, recipe, total_steps=STEPS)

    pruner_a, pruner_c = resumed_and_uninterrupted(run, run, batches, stop_at)
    for name, score in pruner_a.stage("prune").criterion.buffers.items():
        assert torch.equal(score, pruner_c.stage("prune").criterion.buffers[name]), name


# -- soft movement --------------------------------------------------------------------------------


def soft_run(strength: float, seed: int = 0, momentum: bool = True, **options) -> tuple[nn.Module, torch.optim.Optimizer, Pruner]:
    model = mlp(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01) if momentum else torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, Pruner(model, optimizer, soft_movement(strength, **options), total_steps=STEPS)


def test_soft_keeps_exactly_the_weights_scored_above_the_threshold_and_returns_them_with_their_value():
    model, optimizer, pruner = soft_run(0.0, momentum=False, threshold=0.2, lr=1e-6, optimizer="sgd")
    scores = pruner.stage("regularizer").regularizer.scores
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for score in scores.values():  # well clear of the threshold: the tiny score lr cannot move them across
            score.copy_(torch.where(torch.rand(score.shape, generator=generator) < 0.6, -0.5, 1.0))
    batches = random_batches(6, 20, 4)
    for batch in batches:
        train(model, optimizer, pruner, [batch])
        for name, param in pruner.params.items():
            kept = scores[name] > 0.2
            assert torch.equal(pruner.masks[name], kept)
            assert torch.equal(param.detach(), pruner.stage("regularizer").regularizer.shadow.dense[name] * kept)  # pruned: exactly 0
    assert pruner.summary().sparsity == pytest.approx(0.6, abs=0.05)
    weight, dense = pruner.params["fc1.weight"], pruner.stage("regularizer").regularizer.shadow.dense["fc1.weight"]
    pruned = (~pruner.masks["fc1.weight"]).nonzero()[0].tolist()
    latent = float(dense[tuple(pruned)])
    assert latent != 0.0  # the dense value of a pruned weight is kept
    with torch.no_grad():
        scores["fc1.weight"][tuple(pruned)] = 1.0  # its score climbs back above the threshold
    train(model, optimizer, pruner, batches[:1])
    assert bool(pruner.masks["fc1.weight"][tuple(pruned)])
    assert float(weight.detach()[tuple(pruned)]) == latent  # while pruned it got no gradient, and it returns as it was


def test_soft_scores_accumulate_movement_and_the_penalty_pulls_every_score_down():
    lr, init, strength = 0.5, 5.0, 3.0  # init far above the threshold: nothing is pruned, both runs see the same weights
    runs = {}
    for penalty_strength in (0.0, strength):
        model = mlp()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        params = dict(model.named_parameters())
        movement = {name: torch.zeros_like(params[name]) for name in ("fc1.weight", "fc2.weight")}

        def accumulate(optimizer, args, kwargs, params=params, movement=movement):
            for name, total in movement.items():
                total -= params[name].detach() * params[name].grad

        optimizer.register_step_pre_hook(accumulate)
        pruner = Pruner(model, optimizer, soft_movement(penalty_strength, init=init, lr=lr, optimizer="sgd"), total_steps=STEPS)
        train(model, optimizer, pruner, random_batches(10, 20, 4))
        assert pruner.summary().sparsity == 0.0
        runs[penalty_strength] = ({name: s.detach().clone() for name, s in pruner.stage("regularizer").regularizer.scores.items()}, movement)
    plain, movement = runs[0.0]
    for name, score in plain.items():  # S_T = init - lr * sum_t W_t * dL/dW_t
        torch.testing.assert_close(score, init + lr * movement[name], rtol=1e-5, atol=1e-6)
    penalized, _ = runs[strength]
    count = sum(score.numel() for score in plain.values())
    sigmoid = torch.sigmoid(torch.tensor(init))
    first_step = lr * strength * float(sigmoid * (1 - sigmoid)) / count  # d/dS of strength * mean(sigmoid(S))
    for name, score in penalized.items():
        assert bool((score < plain[name]).all())
        assert float((plain[name] - score).min()) > 9 * first_step  # ten steps, each pulling at least ~first_step


def test_soft_achieved_sparsity_rises_with_the_regularizer_strength():
    batches = random_batches(60, 20, 4)
    achieved = []
    for strength in (0.0, 1.0, 10.0):
        model, optimizer, pruner = soft_run(strength, lr=0.05)
        model.train()
        for x, y in batches:
            loss = F.cross_entropy(model(x), y) + pruner.penalty()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        pruner.finalize()
        achieved.append(pruner.summary().sparsity)
        for name, param in pruner.params.items():
            assert torch.equal(param.detach() != 0, pruner.stage("regularizer").regularizer.scores[name] > 0.0)
    assert achieved[0] < 0.05 and achieved[1] > achieved[0] + 0.2 and achieved[2] > achieved[1] + 0.3, achieved


@pytest.mark.parametrize("stop_at", [5, 23])
def test_soft_resume_mid_run_is_bit_identical(stop_at):
    start, restart = (lambda: soft_run(3.0, lr=0.05)), (lambda: soft_run(3.0, seed=5, lr=0.05))
    pruner_a, pruner_c = resumed_and_uninterrupted(start, restart, random_batches(STEPS, 20, 4), stop_at)
    assert 0.2 < pruner_a.summary().sparsity < 0.95
    for name in pruner_a.params:
        assert torch.equal(pruner_a.stage("regularizer").regularizer.scores[name], pruner_c.stage("regularizer").regularizer.scores[name]), name
        assert torch.equal(pruner_a.stage("regularizer").regularizer.shadow.dense[name], pruner_c.stage("regularizer").regularizer.shadow.dense[name]), name
        assert torch.equal(pruner_a.masks[name], pruner_c.masks[name]), name


def test_soft_movement_recipe_and_bad_values():
    regularizer = soft_movement(2.0, threshold=-1.0, init=0.0).regularizer
    assert (regularizer.type, regularizer.strength, regularizer.threshold, regularizer.init) == ("soft_movement", 2.0, -1.0, 0.0)
    with pytest.raises(ConfigError, match="above the threshold"):
        soft_movement(1.0, threshold=1.0, init=1.0)
    with pytest.raises(ConfigError, match="strength"):
        soft_movement(-1.0)
    with pytest.raises(ConfigError, match="optimizer"):
        soft_movement(1.0, optimizer="rmsprop")
    with pytest.raises(ConfigError, match="decides the masks itself"):
        Recipe.from_dict({"regularizer": {"type": "soft_movement", "strength": 1.0}, "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5}}})


# -- top-k movement (learned scores, the paper's hard form) --------------------------------------


def topk_run(seed: int = 0, momentum: bool = True, **options) -> tuple[nn.Module, torch.optim.Optimizer, Pruner]:
    model = mlp(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01) if momentum else torch.optim.SGD(model.parameters(), lr=0.1)
    recipe = topk_movement(options.pop("final", 0.75), **{"begin": 0.1, "end": 0.6, **options})
    return model, optimizer, Pruner(model, optimizer, recipe, total_steps=STEPS)


def test_topk_mask_after_every_step_is_the_per_layer_top_k_of_the_learned_scores():
    model, optimizer, pruner = topk_run()
    schedule, scores = pruner.stage("regularizer").regularizer.schedule, pruner.stage("regularizer").regularizer.scores
    returned = 0
    previous = None
    for step, batch in enumerate(random_batches(STEPS, 20, 4), start=1):
        train(model, optimizer, pruner, [batch])
        target = schedule.target(step)
        for name, param in pruner.params.items():
            mask, score = pruner.masks[name], scores[name].detach()
            assert int(mask.sum()) == param.numel() - round(target * param.numel())
            if target > 0:
                assert float(score[mask].min()) >= float(score[~mask].max()), (step, name)  # kept: the top-k (ties either way)
            assert torch.equal(param.detach(), pruner.stage("regularizer").regularizer.shadow.dense[name] * pruner.masks[name])
        if previous is not None:
            returned += sum(int((pruner.masks[n] & ~previous[n]).sum()) for n in previous)
        previous = {name: pruner.masks[name].clone() for name in pruner.params}
    assert pruner.summary().sparsity == pytest.approx(0.75, abs=0.01)
    assert returned > 0  # weights removed at one step came back at a later one: the top-k is retaken over all weights


def test_topk_scores_of_pruned_weights_keep_learning_from_their_saved_values_and_they_return_as_they_were():
    lr = 0.5
    model, optimizer, pruner = topk_run(momentum=False, lr=lr, optimizer="sgd", final=0.5, begin=0.0, end=0.0, unit="step")
    batches = random_batches(12, 20, 4)
    train(model, optimizer, pruner, batches[:3])
    regularizer, weight = pruner.stage("regularizer").regularizer, pruner.params["fc1.weight"]
    lowest = pruner.stage("regularizer").regularizer.scores["fc1.weight"].detach()
    pruned = tuple(int(i) for i in torch.unravel_index(lowest.argmin(), lowest.shape))  # the deepest-pruned weight
    assert not bool(pruner.masks["fc1.weight"][pruned])
    latent = float(regularizer.shadow.dense["fc1.weight"][pruned])
    assert float(weight.detach()[pruned]) == 0.0 and latent != 0.0
    seen = {}

    def read_gradient(optimizer, args, kwargs):  # runs after the Pruner's hook: the forward used W' = 0 here
        seen["grad"] = float(pruner.stage("regularizer").regularizer.scores["fc1.weight"].grad[pruned])

    optimizer.register_step_pre_hook(read_gradient)
    before = float(regularizer.scores["fc1.weight"].detach()[pruned])
    train(model, optimizer, pruner, batches[3:4])
    after = float(regularizer.scores["fc1.weight"].detach()[pruned])
    assert seen["grad"] != 0.0
    assert after == pytest.approx(before - lr * seen["grad"], rel=1e-6)  # dL/dS = dL/dW' * W with W its saved dense value
    assert not bool(pruner.masks["fc1.weight"][pruned])
    assert float(regularizer.shadow.dense["fc1.weight"][pruned]) == latent  # pruned: no gradient, no update
    with torch.no_grad():
        regularizer.scores["fc1.weight"][pruned] = 1e6  # its score overtakes every kept weight's
    train(model, optimizer, pruner, batches[4:5])
    assert bool(pruner.masks["fc1.weight"][pruned])
    assert float(weight.detach()[pruned]) == latent  # back with the value it had when it was removed


@pytest.mark.parametrize("stop_at", [3, 17])
def test_topk_resume_mid_run_is_bit_identical(stop_at):
    pruner_a, pruner_c = resumed_and_uninterrupted(topk_run, lambda: topk_run(seed=5), random_batches(STEPS, 20, 4), stop_at)
    for name in pruner_a.params:
        assert torch.equal(pruner_a.stage("regularizer").regularizer.scores[name], pruner_c.stage("regularizer").regularizer.scores[name]), name
        assert torch.equal(pruner_a.stage("regularizer").regularizer.shadow.dense[name], pruner_c.stage("regularizer").regularizer.shadow.dense[name]), name
        assert torch.equal(pruner_a.masks[name], pruner_c.masks[name]), name


def test_topk_movement_recipe_and_bad_values(tmp_path):
    (tmp_path / "recipe.yaml").write_text(topk_movement(0.9, allocation="global").to_yaml())
    recipe = Recipe.from_yaml(tmp_path / "recipe.yaml")
    assert (recipe.regularizer.type, recipe.regularizer.schedule.final, recipe.regularizer.allocation) == ("topk_movement", 0.9, "global")
    with pytest.raises(ConfigError, match="allocation"):
        topk_movement(0.9, allocation="row")
    with pytest.raises(ConfigError, match="final"):
        topk_movement(1.0)
    with pytest.raises(ConfigError, match="decides the masks itself"):
        Recipe.from_dict({**topk_movement(0.5).to_dict(), "pruning": {"schedule": {"type": "one_shot", "sparsity": 0.5}}})
    with pytest.raises(ConfigError, match="total_steps|steps_per_epoch"):
        Pruner(mlp(), torch.optim.SGD(mlp().parameters(), lr=0.1), topk_movement(0.5))  # a fraction schedule needs the run's length
