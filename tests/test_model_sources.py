"""Model sources of the main job: factories, torchvision names, pretrained weights, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pruneaware.core.errors import ConfigError, StateError
from pruneaware.models.sources import resolve_model
from pruneaware.models.weights import load_weights


def _resolve(reference: str, **options: object) -> nn.Module:
    return resolve_model(reference, dict(options), task="classification", input_shape=(4,), num_classes=3)


def test_factories_get_num_classes_and_their_errors_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user_models_e.py").write_text(
        "from torch import nn\n"
        "def linear(num_classes, width=4):\n    return nn.Linear(width, num_classes)\n"
        "def not_a_module():\n    return 'mlp'\n"
        "raise_on_import = None\n"
    )
    (tmp_path / "user_models_broken.py").write_text("import no_such_dependency_xyz\n")
    assert _resolve("user_models_e:linear").out_features == 3
    assert _resolve("user_models_e:linear", num_classes=5, width=2).weight.shape == (5, 2)
    with pytest.raises(ConfigError, match="returning a torch.nn.Module; it returned str"):
        _resolve("user_models_e:not_a_module")
    with pytest.raises(ConfigError, match="keyword arguments user_models_e:linear accepts"):
        _resolve("user_models_e:linear", depth=3)
    with pytest.raises(ConfigError, match="a callable 'raise_on_import'"):
        _resolve("user_models_e:raise_on_import")
    with pytest.raises(ConfigError, match="importing 'user_models_broken' failed with ModuleNotFoundError: No module named 'no_such_dependency_xyz'"):
        _resolve("user_models_broken:build")
    with pytest.raises(ConfigError, match="built-in model"):
        _resolve("resnet9000")


def test_torchvision_models_by_name() -> None:
    model = _resolve("torchvision:resnet18")
    assert model.fc.out_features == 3
    with pytest.raises(ConfigError, match="resnet18"):  # the valid names are listed
        _resolve("torchvision:resnet17")


def test_weight_files_that_cannot_be_read_are_state_errors_naming_the_file(tmp_path: Path) -> None:
    model = nn.Linear(4, 3)
    from safetensors.torch import save_file

    save_file(model.state_dict(), tmp_path / "good.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "good.safetensors").read_bytes()[:40])
    with pytest.raises(StateError, match="cut.safetensors"):
        load_weights(model, tmp_path / "cut.safetensors")
    torch.save(model, tmp_path / "whole_model.pt")  # a pickled module, not a state_dict
    with pytest.raises(StateError, match=r"whole_model.pt.*save model.state_dict\(\)"):
        load_weights(model, tmp_path / "whole_model.pt")
    torch.save({"weight": torch.zeros(3, 5), "bias": torch.zeros(3)}, tmp_path / "wide.pt")
    with pytest.raises(StateError, match=r"shape differs: weight \[3, 5\] \(model \[3, 4\]\)"):
        load_weights(model, tmp_path / "wide.pt")
    with pytest.raises(ConfigError, match="an existing .safetensors or .pt file"):
        load_weights(model, tmp_path / "absent.pt")
    load_weights(model, tmp_path / "good.safetensors")
