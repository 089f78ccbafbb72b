"""Structured pruning on the torchvision CNN zoo, and the models Torch-Pruning cannot handle: refused with the
module and the fix before anything is cut, or pruned through a documented workaround that provably changes
no output."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

import pruneaware as pa
from pruneaware.core.errors import TraceError
from pruneaware.measure import count_macs, count_parameters
from pruneaware.structured import build_dependency_graph

torch.set_num_threads(1)
IMAGES = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([3, 7])
SEQUENCES = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))

# Fraction of channels removed per model, tuned so the MACs land near half of the dense model's.
ZOO = [
    pytest.param("resnet18", 0.35),
    pytest.param("mobilenet_v2", 0.4),
    pytest.param("mobilenet_v3_small", 0.3),
    pytest.param("mobilenet_v3_large", 0.33),
    pytest.param("efficientnet_b0", 0.4),
    pytest.param("regnet_x_400mf", 0.3),
    pytest.param("regnet_y_400mf", 0.35),
    pytest.param("convnext_tiny", 0.22),
    pytest.param("resnet50", 0.3),
    pytest.param("densenet121", 0.35),
]


def channel_recipe(fraction: float, at: int = 2, ignore: Sequence[str] = ()) -> pa.Recipe:
    schedule = {"type": "one_shot", "sparsity": fraction, "at": at, "unit": "step"}
    return pa.Recipe.from_dict({"name": "zoo", "structured": {"schedule": schedule, "ignore": list(ignore)}})


def trained_like(model: nn.Module) -> nn.Module:
    """Spread norm scales and layer scales out, as training leaves them.

    torchvision initialises every norm scale to 1 and ConvNeXt's layer scales to 1e-6. Where a
    coupled group's score is dominated by those equal scales (ConvNeXt's residual stream runs
    through a LayerNorm in every block), its channels all score alike and global ranking never
    picks them; a trained model has no such ties.
    """
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
        for name, param in model.named_parameters():
            if name.endswith("layer_scale"):
                param.copy_(0.1 + 0.5 * torch.rand(param.shape, generator=generator))
    return model


def torchvision_model(name: str, **options: object) -> nn.Module:
    torch.manual_seed(0)
    return trained_like(getattr(torchvision.models, name)(weights=None, num_classes=10, **options))


def sgd_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(IMAGES), LABELS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize(("name", "fraction"), ZOO)
def test_zoo_model_trains_through_channel_removal_at_half_the_macs(name: str, fraction: float) -> None:
    model = torchvision_model(name)
    dense_macs, dense_params = count_macs(model, IMAGES[:1]).dense, count_parameters(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    pa.Pruner(model, optimizer, channel_recipe(fraction, at=2), total_steps=4, example_inputs=IMAGES)
    losses = sgd_steps(model, optimizer, 2)  # channels are removed inside the second optimizer.step()
    after_surgery = {key: p.detach().clone() for key, p in model.named_parameters()}
    losses += sgd_steps(model, optimizer, 2)
    assert all(math.isfinite(loss) for loss in losses), losses
    moved = [key for key, p in model.named_parameters() if not torch.equal(p, after_surgery[key])]
    assert len(moved) == len(after_surgery), "the optimizer stopped updating some parameters after surgery"
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in model.parameters()}
    assert model(IMAGES).shape == (2, 10)
    macs, params = count_macs(model, IMAGES[:1]).dense, count_parameters(model)
    print(f"\n{name}: channels removed {fraction}, MACs {dense_macs:,} -> {macs:,} ({macs / dense_macs:.3f}x), "
          f"parameters {dense_params:,} -> {params:,} ({params / dense_params:.3f}x)")
    assert macs <= 0.65 * dense_macs
    assert params < dense_params


# -- exactness: removing channels whose weights are all zero changes no output ----------------------


def silence_half_the_channels(model: nn.Module, example: Tensor, keep: Sequence[nn.Module] = ()) -> None:
    """Zero every weight of every other channel of each prunable group, on both sides (producers and consumers).

    The silenced channels score exactly zero, so a removal smaller than half takes only them; if the
    graph mapped any index wrongly, the surviving weights would be misaligned and outputs would change.
    """
    graph = build_dependency_graph(model, example)
    for full in graph.get_all_groups(ignored_layers=list(keep), root_module_types=(nn.Conv2d, nn.Linear)):
        root, handler = full[0].dep.target.module, full[0].dep.handler
        group = graph.get_pruning_group(root, handler, list(range(0, len(full[0].idxs), 2)))
        for dep, indices in group:
            zero_channels(dep.target.module, graph.is_out_channel_pruning_fn(dep.handler), list(indices))


@torch.no_grad()
def zero_channels(module: nn.Module | nn.Parameter, outputs: bool, indices: list[int]) -> None:
    """Zero the weights of ``module`` that read (inputs) or write (outputs) the given channels."""
    if isinstance(module, (nn.Conv2d, nn.Linear)) and outputs:
        module.weight[indices] = 0
        if module.bias is not None:
            module.bias[indices] = 0
    elif isinstance(module, nn.Conv2d):  # input channels; group g of a grouped conv sees inputs [g*per_in, (g+1)*per_in)
        per_in, per_out = module.weight.shape[1], module.out_channels // module.groups
        for index in indices:
            group, column = divmod(index, per_in)
            module.weight[group * per_out : (group + 1) * per_out, column] = 0
    elif isinstance(module, nn.Linear):
        module.weight[:, indices] = 0
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.weight[indices] = module.bias[indices] = module.running_mean[indices] = 0
    elif isinstance(module, nn.LSTM):  # input channels of the first layer
        for suffix in ("", "_reverse") if module.bidirectional else ("",):
            getattr(module, f"weight_ih_l0{suffix}")[:, indices] = 0


def assert_removal_changes_no_output(
    model: nn.Module, example: Tensor, ignore: Sequence[str] = (), silence: Callable[[nn.Module], None] | None = None
) -> None:
    """Silence half the channels (``silence`` or every prunable group), remove 30% of them, and compare outputs."""
    if silence is None:
        keep = [m for n, m in model.named_modules() if any(fnmatchcase(n, p) for p in ignore)] + [last_layer(model)]
        silence_half_the_channels(model, example, keep)
    else:
        silence(model)
    reference, before = model(example).detach(), count_parameters(model)
    pa.Pruner(model, None, channel_recipe(0.3, at=0, ignore=ignore), total_steps=1, example_inputs=example)
    assert count_parameters(model) < before, "nothing was removed"
    torch.testing.assert_close(model(example), reference, rtol=1e-4, atol=1e-5)


def last_layer(model: nn.Module) -> nn.Module:
    """The classifier, which the Pruner never narrows."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


# ConvNeXt is left out: its LayerNorm normalises across channels, so even an all-zero channel counts in the
# mean and variance of the others, and removing it changes outputs by design.
@pytest.mark.parametrize(
    "name",
    ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf", "densenet121"],
)
def test_zoo_removal_of_silent_channels_changes_no_output(name: str) -> None:
    model = torchvision_model(name).eval()
    assert_removal_changes_no_output(model, IMAGES)


class FlattenHead(nn.Module):
    """Convolutions whose feature map is flattened into a Linear: channels map to blocks of its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=4), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 3, stride=4))
        self.hidden = nn.Linear(8 * 4 * 4, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.hidden(self.features(x).flatten(1))))


def test_reshape_that_the_graph_follows_prunes_exactly() -> None:
    torch.manual_seed(0)
    assert_removal_changes_no_output(trained_like(FlattenHead()).eval(), IMAGES)


# -- models Torch-Pruning cannot handle: refused before anything is cut, or pruned through the named workaround -----


def assert_refused(model: nn.Module, example: Tensor, match: str, ignore: Sequence[str] = ()) -> None:
    """The Pruner raises TraceError matching ``match`` when it is built, and the model is left as it was."""
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(TraceError, match=match):
        pa.Pruner(model, None, channel_recipe(0.3, at=0, ignore=ignore), total_steps=1, example_inputs=example)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_channel_shuffle_in_shufflenet_is_refused_naming_the_block() -> None:
    assert_refused(torchvision_model("shufflenet_v2_x0_5"), IMAGES, r"'stage2\.0' shuffles channels.*unstructured granularity")


class ShuffledConvs(nn.Module):
    """Two convolutions with a channel shuffle between them, written as ``shuffle`` does it."""

    def __init__(self, shuffle: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.shuffle = shuffle
        self.first, self.second, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        y = self.first(x)
        b, c, h, w = y.shape
        y = self.shuffle(y.view(b, 2, c // 2, h, w)).reshape(b, c, h, w)
        return self.head(self.second(y).mean((2, 3)))


@pytest.mark.parametrize(
    "shuffle",
    [lambda y: y.transpose(1, 2), lambda y: torch.swapaxes(y, 2, 1), lambda y: y.permute(0, 2, 1, 3, 4)],
    ids=["transpose", "swapaxes", "permute"],
)
def test_any_channel_shuffle_is_refused(shuffle: Callable[[Tensor], Tensor]) -> None:
    assert_refused(ShuffledConvs(shuffle), IMAGES, r"'ShuffledConvs' shuffles channels")


SWIN_IGNORE = ["features.0.0", "features.*.*.attn", "features.*.*.mlp.3", "features.*.reduction"]


def test_swin_is_refused_with_the_ignore_list_that_works() -> None:
    pattern = r"'features\.1\.0\.attn' \(ShiftedWindowAttention\) is shifted-window attention.*add \[{}\] to 'ignore'".format(
        ", ".join(repr(p).replace(".", r"\.").replace("*", r"\*") for p in SWIN_IGNORE)
    )
    assert_refused(torchvision_model("swin_t"), IMAGES, pattern)


def silence_swin_mlp_hidden(model: nn.Module) -> None:
    """Zero every other hidden unit of each block's MLP (first Linear's outputs, second Linear's inputs)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torchvision.models.swin_transformer.SwinTransformerBlock):
                module.mlp[0].weight[::2] = module.mlp[0].bias[::2] = module.mlp[3].weight[:, ::2] = 0


@pytest.mark.slow  # about 25 s: Torch-Pruning's shape inference is slow through Swin's reshapes
def test_swin_with_the_suggested_ignore_list_prunes_mlp_hidden_units_exactly() -> None:
    model = torchvision_model("swin_t").eval()
    assert_removal_changes_no_output(model, IMAGES, ignore=SWIN_IGNORE, silence=silence_swin_mlp_hidden)
    block = model.features[1][0]
    assert block.mlp[0].out_features < 4 * 96 and block.attn.qkv.in_features == 96


class Recurrent(nn.Module):
    """Linear layers feeding a recurrent layer whose last state is classified."""

    def __init__(self, cell: type[nn.RNNBase], layers: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.proj = nn.Linear(8, 32), nn.Linear(32, 32)
        self.rnn = cell(32, 48, num_layers=layers, batch_first=True)
        self.head = nn.Linear(48, 10)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.proj(F.relu(self.embed(x))))
        return self.head(out[:, -1])


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_is_refused_unless_ignored(layers: int) -> None:
    assert_refused(Recurrent(nn.LSTM, layers), SEQUENCES, r"'rnn' is an nn\.LSTM.*list \['rnn'\] under 'ignore'")


def test_ignored_lstm_keeps_its_hidden_units_and_the_layers_feeding_it_prune_exactly() -> None:
    model = Recurrent(nn.LSTM).eval()
    assert_removal_changes_no_output(model, SEQUENCES, ignore=["rnn"])
    assert model.rnn.hidden_size == 48 and model.rnn.input_size < 32


@pytest.mark.parametrize("cell", [nn.GRU, nn.RNN])
def test_gru_and_rnn_are_refused_until_they_and_the_layers_feeding_them_are_ignored(cell: type[nn.RNNBase]) -> None:
    name = cell.__name__
    assert_refused(Recurrent(cell), SEQUENCES, rf"'rnn' is an nn\.{name}.*list \['rnn', 'proj'\]")
    assert_refused(Recurrent(cell), SEQUENCES, rf"'rnn' is an nn\.{name}.*list \['proj'\]", ignore=["rnn"])
    model = Recurrent(cell).eval()
    assert_removal_changes_no_output(model, SEQUENCES, ignore=["rnn", "proj"])
    assert model.embed.out_features < 32 and model.rnn.input_size == 32


def test_frozen_batchnorm_stays_frozen_and_prunes_exactly() -> None:
    model = torchvision_model("resnet18").train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.requires_grad_(False).eval()  # frozen affine parameters and running statistics
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    silence_half_the_channels(model, IMAGES, [last_layer(model)])
    reference, before = model(IMAGES).detach(), count_parameters(model)  # deterministic: no dropout, norms in eval
    pa.Pruner(model, optimizer, channel_recipe(0.3, at=0), total_steps=3, example_inputs=IMAGES)
    assert count_parameters(model) < before
    torch.testing.assert_close(model(IMAGES), reference, rtol=1e-4, atol=1e-5)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not norm.training and not norm.weight.requires_grad and not norm.bias.requires_grad for norm in norms)
    frozen = {name: value.clone() for name, value in model.state_dict().items() if "bn" in name or "downsample.1" in name}
    assert all(math.isfinite(loss) for loss in sgd_steps(model, optimizer, 3))
    assert all(torch.equal(model.state_dict()[name], value) for name, value in frozen.items())


def resnet18_with_frozen_batchnorm2d() -> nn.Module:
    """ResNet-18 built with torchvision's FrozenBatchNorm2d (statistics in buffers), given trained-like statistics."""
    model = torchvision_model("resnet18", norm_layer=FrozenBatchNorm2d)
    generator = torch.Generator().manual_seed(2)
    for norm in model.modules():
        if isinstance(norm, FrozenBatchNorm2d):
            for name in ("weight", "running_var"):
                getattr(norm, name).copy_(0.5 + torch.rand(norm.weight.shape, generator=generator))
            for name in ("bias", "running_mean"):
                getattr(norm, name).copy_(0.1 * torch.randn(norm.weight.shape, generator=generator))
    return model


def as_frozen_batchnorm(frozen: FrozenBatchNorm2d) -> nn.BatchNorm2d:
    """The documented workaround: an nn.BatchNorm2d holding the same statistics, frozen and in eval mode."""
    norm = nn.BatchNorm2d(frozen.weight.numel(), eps=frozen.eps)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name).copy_(getattr(frozen, name))
    return norm.requires_grad_(False).eval()


def test_frozen_batchnorm2d_is_refused_and_the_named_replacement_prunes_exactly() -> None:
    model = resnet18_with_frozen_batchnorm2d()
    assert_refused(model, IMAGES, r"'bn1' is a FrozenBatchNorm2d.*replace it by an nn\.BatchNorm with frozen parameters kept in eval mode")
    reference = model(IMAGES).detach()
    for name, module in list(model.named_modules()):
        if isinstance(module, FrozenBatchNorm2d):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, as_frozen_batchnorm(module))
    torch.testing.assert_close(model(IMAGES), reference, rtol=1e-4, atol=1e-5)
    assert_removal_changes_no_output(model, IMAGES)
