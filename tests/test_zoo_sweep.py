"""Every torchvision classification model, with a frozen stem and with every layer trainable: structured pruning
either removes channels and training goes on with consistent shapes, or refuses before anything is cut."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core.errors import PruneawareError
from pruneaware.structured import convert_for_pruning

HEAVY = {"regnet_y_128gf", "vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_x_32gf", "convnext_large", "efficientnet_b7"}
MODELS = sorted(torchvision.models.list_models(module=torchvision.models), key=lambda name: name in HEAVY)  # the largest last
OPTIONS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
    "maxvit_t": {"input_size": (224, 224)},
    **{name: {"image_size": 64} for name in MODELS if name.startswith("vit_") and name != "vit_h_14"},
    "vit_h_14": {"image_size": 56},
}
SIDES = {"inception_v3": 80, "vit_h_14": 56, "maxvit_t": 224}
REFUSED = {"maxvit_t", "swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b"} | {n for n in MODELS if n.startswith("shufflenet")}
"""Refused before anything is cut, as documented in docs/structured.md (window attention, channel shuffles)."""
LOG = os.environ.get("PRUNEAWARE_ZOO_LOG")
"""A file to append one JSON line per case to (model, stem, outcome, detail, parameters, seconds); unset, nothing is written."""


@pytest.fixture
def outcome(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """What the case found, appended to ``LOG`` with its time; a case that ends without setting it is logged as failed."""
    record: dict[str, object] = {"outcome": "failed"}
    started = time.perf_counter()
    yield record
    if LOG:
        name, frozen_stem = request.node.callspec.params["name"], request.node.callspec.params["frozen_stem"]
        record.update(model=name, stem="frozen" if frozen_stem else "trainable", seconds=round(time.perf_counter() - started, 1))
        with open(LOG, "a") as stream:  # one short write per line: safe across xdist workers
            stream.write(json.dumps(record) + "\n")


def build(name: str, frozen_stem: bool) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=4, **OPTIONS.get(name, {}))
    convert_for_pruning(model)  # the step the refusal of nn.MultiheadAttention names (ViTs); a no-op elsewhere
    if frozen_stem:
        next(m for m in model.modules() if isinstance(m, nn.Conv2d)).requires_grad_(False)
    side = SIDES.get(name, 64)
    return model, torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))


def norms_match_their_inputs(model: nn.Module, images: torch.Tensor) -> None:
    """Every batch norm's statistics and affine parameters are as wide as the tensor it normalizes."""
    widths: list[tuple[str, int, int]] = []

    def record(name: str):  # noqa: ANN202
        return lambda module, args: widths.append((name, args[0].shape[1], module.running_mean.numel()))

    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    handles = [m.register_forward_pre_hook(record(n)) for n, m in norms]
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train()
    assert all(m.weight is None or m.weight.numel() == m.running_mean.numel() for _, m in norms)
    assert [w for w in widths if w[1] != w[2]] == []


@pytest.mark.slow
@pytest.mark.parametrize("frozen_stem", [True, False], ids=["frozen-stem", "trainable"])
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(n)) if n in HEAVY else n for n in MODELS])  # --dist loadgroup: a heavy model's two cases on one worker, in turn
def test_every_torchvision_classifier_prunes_or_is_refused_before_anything_is_cut(name: str, frozen_stem: bool, outcome: dict[str, object]) -> None:
    torch.set_num_threads(1)
    model, images = build(name, frozen_stem)
    outcome["params"] = sum(p.numel() for p in model.parameters())
    labels = torch.arange(images.shape[0]) % 4
    shapes = {n: p.shape for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    schedule = {"type": "one_shot", "sparsity": 0.2, "at": 1, "unit": "step"}
    recipe = pa.Recipe.from_dict({"name": "sweep", "structured": {"schedule": schedule}})
    try:
        pruner = pa.Pruner(model, optimizer, recipe, steps_per_epoch=3, epochs=1, example_inputs=images)
    except PruneawareError as error:
        assert name in REFUSED, f"{name} refused: {error}"
        assert {n: p.shape for n, p in model.named_parameters()} == shapes, "refused, but channels were already cut"
        outcome.update(outcome="refused", detail=f"{type(error).__name__}: {str(error).splitlines()[0][:160]}")
        return
    assert name not in REFUSED, f"{name} is listed as refused in docs/structured.md but prunes"
    for _ in range(3):  # the removal happens in the second step; the third runs forward and backward on the slim model
        loss = F.cross_entropy(pruner.model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert sum(p.numel() for p in model.parameters()) < sum(s.numel() for s in shapes.values()), "no channel was removed"
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.weight.requires_grad is not frozen_stem
    norms_match_their_inputs(model, images)
    outcome.update(outcome="pruned", detail=f"parameters {sum(p.numel() for p in model.parameters()) / outcome['params']:.3f}x")  # type: ignore[operator]
