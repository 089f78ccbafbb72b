"""Sparse LoRA: peft adapters on a pruned model, trained by a plain loop or the HF Trainer, merged without losing a zero."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from pruneaware.core.errors import ConfigError, UsageError
from pruneaware.granularity import NM, Element
from tests.helpers import ThreeLayerMLP, random_batches

peft = pytest.importorskip("peft")
from pruneaware.lora import SparseLoRA  # noqa: E402


def prune(model: nn.Module, names: list[str], granularity: object, sparsity: float = 0.5) -> None:
    """Zero the lowest-magnitude weights of ``names`` (one-shot magnitude pruning)."""
    weights = {name: model.get_submodule(name).weight for name in names}
    masks = granularity.masks({name: w.detach().abs() for name, w in weights.items()}, sparsity)
    with torch.no_grad():
        for name, weight in weights.items():
            weight.mul_(masks[name])


def lora_mlp(granularity: object = Element(), targets: tuple[str, ...] = ("fc1", "fc2")) -> nn.Module:
    torch.manual_seed(0)
    model = ThreeLayerMLP((20, 32, 40, 4))
    prune(model, ["fc1", "fc2"], granularity)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False)  # B != 0: the update is not zero
    return peft.get_peft_model(model, config)


def zeros(model: nn.Module, names: list[str]) -> dict[str, int]:
    return {name: int((model.get_submodule(name).weight == 0).sum()) for name in names}


def train(model: nn.Module, steps: int = 5) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for x, y in random_batches(steps, 20, 4):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("mode", ["product", "merge"])
@pytest.mark.parametrize("granularity", [Element(), NM(2, 4)], ids=["50%", "2:4"])
def test_merge_keeps_every_zero_of_the_base(mode: str, granularity: object) -> None:
    model = lora_mlp(granularity)
    before = zeros(model.base_model.model, ["fc1", "fc2"])
    lora = SparseLoRA(model, mode=mode)
    train(model)
    merged = lora.merge()
    assert not any(isinstance(m, peft.tuners.lora.LoraLayer) for m in merged.modules())
    assert zeros(merged, ["fc1", "fc2"]) == before  # counted sparsity of the merged model equals the base's
    if isinstance(granularity, NM):
        groups = merged.fc1.weight.reshape(-1, 4)
        assert int((groups != 0).sum(1).max()) <= 2  # the 2:4 pattern survives


def test_peft_merge_alone_fills_the_zeros() -> None:
    model = lora_mlp()
    before = zeros(model.base_model.model, ["fc1"])
    merged = model.merge_and_unload()
    assert zeros(merged, ["fc1"])["fc1"] < before["fc1"]  # why SparseLoRA exists


def test_product_mode_merges_exactly_the_model_it_trained() -> None:
    model = lora_mlp()
    lora = SparseLoRA(model, mode="product")
    train(model)
    x = torch.randn(6, 20)
    with torch.no_grad():
        trained = model(x)
        merged = lora.merge()(x)
    torch.testing.assert_close(merged, trained, rtol=1e-5, atol=1e-5)


def test_base_stays_sparse_while_adapters_train() -> None:
    model = lora_mlp()
    base = model.base_model.model
    weights = {name: base.get_submodule(name).base_layer.weight.detach().clone() for name in ("fc1", "fc2")}
    SparseLoRA(model)
    train(model)
    for name, weight in weights.items():
        assert torch.equal(base.get_submodule(name).base_layer.weight, weight)


def test_a_target_outside_the_pruning_scope_is_warned_once() -> None:
    model = lora_mlp(targets=("fc1", "fc2", "head"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SparseLoRA(model, scope=["fc1.weight", "fc2.weight"])
    messages = [str(w.message) for w in caught if "pruning scope" in str(w.message)]
    assert len(messages) == 1 and "'head'" in messages[0] and "'fc1'" not in messages[0]


def test_bad_input_is_refused() -> None:
    with pytest.raises(UsageError, match="get_peft_model"):
        SparseLoRA(ThreeLayerMLP())
    with pytest.raises(ConfigError, match="mode"):
        SparseLoRA(lora_mlp(), mode="dense")


def test_hf_trainer_callback_with_a_peft_model(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from pruneaware.lora.hf import SparseLoRACallback
    from tests.test_integration_hf import make_trainer, tiny_bert

    model = tiny_bert()
    names = [f"bert.encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "value")]
    prune(model, names, NM(2, 4))
    before = zeros(model, names)
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"]))
    callback = SparseLoRACallback(mode="product", scope=[f"{n}.weight" for n in names])
    make_trainer(peft_model, [callback], tmp_path, num_train_epochs=1).train()
    trainable = callback.lora.trainable_parameters()
    merged = callback.merge()
    assert zeros(merged, names) == before
    assert 0 < trainable < sum(p.numel() for p in merged.parameters()) // 10
