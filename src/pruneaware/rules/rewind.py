"""Rewinding (lottery tickets: Frankle & Carbin 2019; Frankle et al. 2020): each pruning round restarts from step k.

The whole model state (parameters and buffers) is saved once training has completed ``k`` steps
(``k = 0``: the initialization, the original lottery ticket). After every pruning round it is
loaded back and the new masks applied, so the surviving weights hold exactly their step-``k``
values and retrain from there. The random-reinitialization control trains the final mask from a
fresh initialization instead.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from pruneaware.core.errors import ConfigError, StateError


class Rewind:
    """Snapshot at step ``at``; ``rewind_`` after every update step in ``update_steps``."""

    def __init__(self, module: nn.Module, at: int, update_steps: Sequence[int], *, reinit: bool = False, reset_optimizer: bool = True, seed: int = 0):
        if at >= update_steps[0]:
            raise ConfigError("pruning.rewind.to", f"step {at}", f"a time before the first pruning round (step {update_steps[0]})")
        self.module = module
        self.at = at
        self.update_steps = tuple(update_steps)
        self.reinit = reinit
        self.reset_optimizer = reset_optimizer
        self.seed = seed
        self.snapshot: dict[str, Tensor] | None = None

    def snapshot_if_due(self, step: int) -> None:
        """Save the model state (to host memory) once ``step`` steps are done, if that is the rewind point."""
        if step == self.at:
            self.snapshot = {name: value.detach().to("cpu", copy=True) for name, value in self.module.state_dict().items()}

    @torch.no_grad()
    def rewind_(self, step: int, optimizer: torch.optim.Optimizer | None) -> None:
        """Load the step-``k`` state (a fresh initialization for the control's last round) and restart the optimizer's statistics.

        The caller applies the masks afterwards, so only the survivors keep the loaded values.
        """
        if self.snapshot is None:
            raise StateError(f"no step-{self.at} snapshot to rewind to at step {step}; was the pruner state loaded?")
        state = self._fresh_initialization() if self.reinit and step == self.update_steps[-1] else self.snapshot
        self.module.load_state_dict(state)
        if self.reset_optimizer and optimizer is not None:
            optimizer.state.clear()  # as a new training run would: moments are rebuilt from the next gradient

    def round_step(self, step: int) -> int:
        """The step of the first round that ``step`` replays (each round retrains from step k): key an LR schedule on it to restart it per round."""
        position = bisect.bisect_right(self.update_steps, step)
        return step if position == 0 else self.at + step - self.update_steps[position - 1]

    def _fresh_initialization(self) -> dict[str, Tensor]:
        """The snapshot with every module's ``reset_parameters()`` run again under seed ``seed`` (global RNG untouched)."""
        fresh = copy.deepcopy(self.module)
        fresh.load_state_dict(self.snapshot)
        devices = sorted({value.device.index for value in fresh.state_dict().values() if value.is_cuda})
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for module in fresh.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        return fresh.state_dict()

    def state_dict(self) -> dict[str, object]:
        return {"snapshot": self.snapshot}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore the snapshot saved by ``state_dict`` (None when the run stopped before step k)."""
        snapshot = state["snapshot"]
        if snapshot is not None and set(snapshot) != set(self.module.state_dict()):  # type: ignore[arg-type]
            raise StateError("the rewind snapshot does not match this model's state_dict keys")
        self.snapshot = None if snapshot is None else dict(snapshot)  # type: ignore[call-overload]
