"""Scope: which parameters a recipe touches, by module type and name pattern."""

from __future__ import annotations

import pytest
from torch import nn

from pruneaware.core.errors import ScopeError
from pruneaware.core.scope import Scope


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv1d(4, 4, 3)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8))
        self.head = nn.Linear(8, 2)


def test_defaults_select_linear_and_conv_weights_but_not_the_classifier():
    model = Net()
    selected = Scope().select(model)
    assert list(selected) == ["conv1.weight", "conv2.weight", "block.0.weight", "block.2.weight"]
    assert selected["conv1.weight"] is model.conv1.weight
    assert selected["block.2.weight"] is model.block[2].weight
    assert all(isinstance(p, nn.Parameter) for p in selected.values())
    assert not any("bias" in name or "bn" in name or "block.3" in name or "head" in name for name in selected)


def test_skip_last_false_keeps_the_classifier():
    selected = Scope(skip_last=False).select(Net())
    assert list(selected)[-1] == "head.weight"
    assert len(selected) == 5


def test_include_patterns():
    selected = Scope(include=("block.*",)).select(Net())
    assert list(selected) == ["block.0.weight"]  # block.2 is now the last match, skipped
    selected = Scope(include=("block.*", "conv*"), skip_last=False).select(Net())
    assert list(selected) == ["conv1.weight", "conv2.weight", "block.0.weight", "block.2.weight"]


def test_exclude_patterns():
    selected = Scope(exclude=("conv*",)).select(Net())
    assert list(selected) == ["block.0.weight", "block.2.weight"]
    selected = Scope(exclude=("block.0", "conv1")).select(Net())
    assert list(selected) == ["conv2.weight", "block.2.weight"]


def test_module_types_and_parameter_name():
    assert list(Scope(modules=("Conv2d",), skip_last=False).select(Net())) == ["conv1.weight"]
    biases = Scope(parameter="bias").select(Net())
    assert list(biases) == ["conv1.bias", "conv2.bias", "block.0.bias", "block.2.bias"]
    norms = Scope(modules=("BatchNorm2d", "LayerNorm"), skip_last=False).select(Net())
    assert list(norms) == ["bn1.weight", "block.3.weight"]


def test_module_without_the_parameter_is_skipped():
    model = Net()
    model.block[0] = nn.Linear(8, 8, bias=False)
    assert "block.0.bias" not in Scope(parameter="bias").select(model)


@pytest.mark.parametrize("field", ["include", "exclude"])
def test_pattern_matching_no_module_raises_scope_error_naming_it(field):
    with pytest.raises(ScopeError) as error:
        Scope(**{field: ("encoder.*",)}).select(Net())
    message = str(error.value)
    assert "'encoder.*'" in message
    assert "conv1" in message  # shows what names look like


def test_scope_selecting_nothing_raises():
    with pytest.raises(ScopeError) as error:
        Scope(modules=("Conv3d",)).select(Net())
    assert "Conv3d" in str(error.value) and "Linear" in str(error.value)
    with pytest.raises(ScopeError):
        Scope(include=("head",)).select(Net())  # the only match is the skipped classifier
    with pytest.raises(ScopeError):
        Scope(exclude=("*",)).select(Net())


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.encode = nn.Linear(6, 6)
        self.decode = nn.Linear(6, 6)
        self.decode.weight = self.encode.weight
        self.out = nn.Linear(6, 2)


def test_tied_weights_appear_once():
    model = Tied()
    selected = Scope().select(model)
    assert list(selected) == ["encode.weight"]
    assert len({id(p) for p in selected.values()}) == len(selected)
    all_selected = Scope(skip_last=False).select(model)
    assert list(all_selected) == ["encode.weight", "out.weight"]


class MyLinear(nn.Linear):
    pass


class MyMyLinear(MyLinear):
    pass


def test_subclasses_match_by_base_type_name():
    model = nn.Sequential(MyLinear(4, 4), MyMyLinear(4, 4), nn.Linear(4, 2))
    assert list(Scope().select(model)) == ["0.weight", "1.weight"]
    assert list(Scope(modules=("MyLinear",), skip_last=False).select(model)) == ["0.weight", "1.weight"]


def test_a_bare_module_is_named_by_its_parameter():
    assert list(Scope(skip_last=False).select(nn.Linear(3, 3))) == ["weight"]


class TiedClassifier(nn.Module):
    """A language-model head sharing its embedding's weight (weight tying)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.body = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight


def test_skip_last_keeps_a_classifier_tied_to_an_embedding_dense():
    selected = Scope(modules=("Embedding", "Linear")).select(TiedClassifier())
    assert list(selected) == ["body.weight"]


def test_excluding_one_name_of_a_tied_parameter_excludes_it():
    selected = Scope(modules=("Embedding", "Linear"), exclude=("head",), skip_last=False).select(TiedClassifier())
    assert list(selected) == ["body.weight"]


def test_classifier_tied_to_an_earlier_linear_stays_dense():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    assert list(Scope().select(model)) == ["1.weight"]
