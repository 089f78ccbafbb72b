"""The golden runs: short seeded trainings of every shipped recipe and method builder on tiny models.

A run is recorded as hashes of its final masks and weights (raw tensor bytes), the parameter shapes
after every step that changed one (channel and head removals), and the order of mask operations per
training-loop phase, so a change in any of them is visible. Weight and mask hashes hold only on the machine
that recorded them (``machine()``): another CPU's kernels round differently in the last bits, so each weight's
sum, sum of magnitudes and norm, and each mask's kept count, are recorded too, to be compared there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import pruneaware as pa
from pruneaware.core.masks import MaskSet

STEPS = 40
STEPS_PER_EPOCH = 10
RECIPES = Path(pa.__file__).parent / "recipes"
TRACED = ("apply_", "mask_gradients_", "save_shadows_", "restore_shadows_", "update", "remap")


class TinyCNN1d(nn.Module):
    """The built-in cnn1d's layout (``features`` convolutions, ``classifier`` Linears) at a few hundred weights."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 4, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(4, 8, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(8, 8, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN1d()


def tiny_vit() -> nn.Module:
    import torchvision

    from pruneaware.structured import convert_for_pruning

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=8, patch_size=4, num_layers=1, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=4)
    return convert_for_pruning(vit)


def batches(shape: tuple[int, ...], count: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, *shape, generator=generator), torch.randint(0, 4, (8,), generator=generator)) for _ in range(count)]


@dataclass(frozen=True)
class Case:
    """One golden run: a recipe on a model, and the step at which a checkpoint is saved (None: no checkpoint)."""

    name: str
    recipe: Callable[[], pa.Recipe]
    model: Callable[[], nn.Module] = tiny_cnn
    input_shape: tuple[int, ...] = (1, 40)
    checkpoint_at: int | None = None


def _yaml(name: str) -> Callable[[], pa.Recipe]:
    return lambda: pa.Recipe.from_yaml(RECIPES / f"{name}.yaml")


def _structured(schedule_type: str = "cubic", every: float = 0.1, **fields: Any) -> Callable[[], pa.Recipe]:
    schedule = {"type": schedule_type, "final": 0.5, "begin": 0.1, "end": 0.5, "every": every}
    return lambda: pa.Recipe.from_dict({"name": "structured", "structured": {"schedule": schedule, **fields}})


R = pa.methods
CHECKPOINTED = {"fisher", "dns", "imp", "imp_reinit", "rigl", "movement_topk", "sr_ste_2_4", "structured"}
CASES: list[Case] = [
    *(Case(f"yaml:{path.stem}", _yaml(path.stem), checkpoint_at=14 if path.stem in CHECKPOINTED else None) for path in sorted(RECIPES.glob("*.yaml"))),
    Case("method:gradual_magnitude", lambda: R.gradual_magnitude(0.8)),
    Case("method:fisher_pruning", lambda: R.fisher_pruning(0.8)),
    Case("method:movement_pruning", lambda: R.movement_pruning(0.8)),
    Case("method:topk_movement", lambda: R.topk_movement(0.8)),
    Case("method:soft_movement", lambda: R.soft_movement(1.0, lr=0.05), checkpoint_at=14),
    Case("method:snip", lambda: R.snip(0.8)),
    Case("method:grasp", lambda: R.grasp(0.8)),
    Case("method:synflow", lambda: R.synflow(0.8, rounds=10)),
    Case("method:dynamic_surgery", lambda: R.dynamic_surgery(0.8)),
    Case("method:lottery_ticket", lambda: R.lottery_ticket(0.7, 3)),
    Case("method:l0_sparsity", lambda: R.l0_sparsity(1e-3, droprate_init=0.3, lr=0.1), checkpoint_at=14),
    Case("method:l1_sparsity", lambda: R.l1_sparsity(1e-3, sparsity=0.8)),
    Case("method:one_shot", lambda: R.one_shot(0.8)),
    Case("method:rigl", lambda: R.rigl(0.8)),
    Case("method:sr_ste", lambda: R.sr_ste(scope={"exclude": ["features.0"]})),
    Case("structured:cnn-soft-taylor-group-lasso", _structured(phase="soft", remove_at=0.6, importance="taylor",
         regularizer={"type": "group_lasso", "strength": 1e-3}), checkpoint_at=14),
    Case("structured:cnn-macs-target", _structured(target={"macs": 0.6}, allocation="uniform")),
    Case("structured:vit-heads", _structured("linear", 0.2), model=tiny_vit, input_shape=(3, 8, 8), checkpoint_at=14),
]


def digest(tensor: torch.Tensor) -> str:
    """sha256 (first 16 hex digits) of a tensor's dtype, shape and raw bytes, with -0.0 counted as 0.0.

    The sign of a pruned weight's zero is whatever its last masked update left; it is not behaviour.
    """
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.is_floating_point():
        flat = flat + 0.0  # IEEE: -0.0 + 0.0 == +0.0, every other value unchanged
    raw = flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)
    head = f"{flat.dtype}{tuple(tensor.shape)}".encode()
    return hashlib.sha256(head + raw.numpy().tobytes()).hexdigest()[:16]


def values(tensor: torch.Tensor) -> list[float]:
    """(sum, sum of magnitudes, norm) of a tensor in float64: its values, comparable across CPUs with a tolerance."""
    flat = tensor.detach().cpu().double().reshape(-1)
    return [float(flat.sum()), float(flat.abs().sum()), float(flat.norm())]


CHECKPOINTS_MACHINE: str | None = None
"""``machine()`` of the one that wrote ``checkpoints/`` (None: written before machines were recorded): a run resumed
from them finishes bit-identically to the uninterrupted one only there."""


def machine() -> str:
    """What bit-identical float results depend on: the CPU, the kernels' instruction set, and torch."""
    from pruneaware.hardware.keys import cpu_name

    return f"{cpu_name()} / {torch.backends.cpu.get_cpu_capability()} / torch {torch.__version__}"


@dataclass
class Recorder:
    """Outermost MaskSet operations, grouped by the training-loop phase they happened in."""

    phase: str = "init"
    ops: dict[str, list[str]] = field(default_factory=dict)
    depth: int = 0

    def compressed(self) -> list[list[str]]:
        """Consecutive steps with the same operations folded into one ``[first-last, ops]`` entry."""
        out: list[list[str]] = []
        for phase, ops in self.ops.items():
            text = " ".join(ops)
            if out and phase.isdigit() and out[-1][0].split("-")[0].isdigit() and out[-1][1] == text and int(out[-1][0].split("-")[-1]) + 1 == int(phase):
                out[-1][0] = f"{out[-1][0].split('-')[0]}-{phase}"
            else:
                out.append([phase, text])
        return out


@contextmanager
def traced_masks(recorder: Recorder) -> Iterator[None]:
    """Wrap MaskSet's operations with ``recorder`` (only calls not made from inside another traced one)."""
    originals = {name: getattr(MaskSet, name) for name in TRACED}

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def traced(self: MaskSet, *args: Any, **kwargs: Any) -> Any:
            if recorder.depth == 0:
                recorder.ops.setdefault(recorder.phase, []).append(name)
            recorder.depth += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                recorder.depth -= 1

        return traced

    for name, method in originals.items():
        setattr(MaskSet, name, wrap(name, method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(MaskSet, name, method)


@contextmanager
def deterministic() -> Iterator[None]:
    """One thread and deterministic kernels, restored afterwards."""
    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


class Run:
    """A model, Adam and a Pruner on ``case``'s recipe, trained one optimizer step at a time."""

    def __init__(self, case: Case, recorder: Recorder | None = None):
        self.case = case
        self.recorder = recorder or Recorder()
        self.data = batches(case.input_shape)
        torch.manual_seed(0)
        self.model = case.model()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)
        self.recorder.phase = "init"
        self.pruner = pa.Pruner(
            self.model, self.optimizer, case.recipe(), steps_per_epoch=STEPS_PER_EPOCH, total_steps=STEPS,
            example_inputs=self.data[0][0], calibration_data=self.data[:2], loss_fn=F.cross_entropy,
        )
        self.step = 0
        self.shapes: dict[str, dict[str, list[int]]] = {}
        self._last_shapes = self._shapes()

    def _shapes(self) -> dict[str, list[int]]:
        return {name: list(p.shape) for name, p in self.model.named_parameters()}

    def train_to(self, stop: int) -> None:
        while self.step < stop:
            inputs, targets = self.data[self.step % len(self.data)]
            self.step += 1
            self.recorder.phase = str(self.step)
            loss = F.cross_entropy(self.model(inputs), targets) + self.pruner.penalty()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            shapes = self._shapes()
            if shapes != self._last_shapes:
                self.shapes[str(self.step)] = {n: s for n, s in shapes.items() if self._last_shapes.get(n) != s}
                self._last_shapes = shapes

    def checkpoint(self) -> dict[str, Any]:
        """What a training job saves: model, optimizer, pruner (its own format), RNG and step."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "pruner": self.pruner.state_dict(),
                "rng": torch.get_rng_state(), "step": self.step}

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from ``checkpoint()``: pruner first (it replays channel removals), then model and optimizer."""
        self.pruner.load_state_dict(state["pruner"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self._last_shapes = self._shapes()

    def finish(self) -> dict[str, Any]:
        """Train to the end, finalize, and return the run's golden record."""
        self.train_to(STEPS)
        self.recorder.phase = "finalize"
        self.pruner.finalize()
        masks = self.pruner.masks.state_dict()
        return {
            "masks": {name: digest(mask) for name, mask in sorted(masks.items())},
            "mask_counts": {name: int(mask.sum()) for name, mask in sorted(masks.items())},
            "weights": {name: digest(value) for name, value in sorted(self.model.state_dict().items())},
            "values": {name: values(value) for name, value in sorted(self.model.state_dict().items())},
            "machine": machine(),
            "kept": sum(int(mask.sum()) for mask in masks.values()),
            "shapes": self.shapes,
        }


def record(case: Case) -> dict[str, Any]:
    """The uninterrupted run's golden record, with its trace of mask operations."""
    recorder = Recorder()
    with deterministic(), traced_masks(recorder):
        result = Run(case, recorder).finish()
    return {**result, "trace": recorder.compressed()}


def checkpoint_path(case: Case) -> Path:
    return Path(__file__).parent / "checkpoints" / f"{case.name.replace(':', '-')}.pt"
