"""The pure helpers of bench/fastnas_compare.py: slim models saved as tensors rebuild with the same shapes and outputs."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fastnas_helpers import build_resnet18, conv_widths, load_slim, mean_std, overhead_seconds, resize_to, save_slim  # noqa: E402


def slimmed() -> nn.Module:
    """ResNet-18 with one block's inner width cut to 24 (conv, its BN and the next conv's input) and the classifier's input cut."""
    model = build_resnet18()
    block = model.layer2[1]
    block.conv1 = nn.Conv2d(128, 24, 3, padding=1, bias=False)
    block.bn1 = nn.BatchNorm2d(24)
    block.conv2 = nn.Conv2d(24, 128, 3, padding=1, bias=False)
    return model.eval()


def test_saved_slim_model_reloads_with_its_shapes_and_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = slimmed()
    model.layer2[1].bn1.running_mean.uniform_()  # buffers travel too
    save_slim(model, tmp_path / "slim.pt")
    loaded = load_slim(tmp_path / "slim.pt", build_resnet18())
    assert conv_widths(loaded) == conv_widths(model)
    assert 24 in conv_widths(loaded) and conv_widths(loaded) != conv_widths(build_resnet18())
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_resize_refuses_a_layer_it_cannot_rebuild() -> None:
    model = nn.Sequential(nn.LayerNorm(8))
    with pytest.raises(ValueError, match="LayerNorm"):
        resize_to(model, {"0.weight": torch.ones(4)})


def test_overhead_is_the_time_beyond_a_plain_step() -> None:
    assert overhead_seconds([0.1, 0.1, 0.1, 2.1, 0.1]) == pytest.approx(2.0)
    assert overhead_seconds([]) == 0.0


def test_mean_std_over_seeds() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == "2 ± 1"
    assert mean_std([5.0]) == "5 ± 0"
