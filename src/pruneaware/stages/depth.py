"""Depth pruning as a stage: whole blocks (residual blocks, transformer layers) removed at scheduled steps.

Recipe entry (``stages:``)::

    {type: depth, remove: 2, importance: influence, at: [0.2, 0.4], unit: fraction}

A target is ``remove`` (blocks), ``params`` or ``macs`` (fractions of the model's); at the k-th of
the ``at`` times, k/n of it is reached by removing the least important remaining blocks. Removed
parameters are announced through the context, so the optimizer (the remaining layers keep their
state), the masks, the other stages and a DDP wrapper follow.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from pruneaware.core.context import Context
from pruneaware.core.registry import register_stage
from pruneaware.core.stage import Stage
from pruneaware.depth.blocks import Block, find_blocks, remove_block, trace_blocks
from pruneaware.depth.compact import compact
from pruneaware.depth.importance import BlockGates, block_influence
from pruneaware.core.errors import ConfigError, StateError
from pruneaware.structured.surgery import ParameterRemap

log = logging.getLogger(__name__)
IMPORTANCE = ("influence", "gate", "taylor")
UNITS = ("step", "epoch", "fraction")


@register_stage("depth")
class DepthPruning(Stage):
    """Removes the least important blocks at each ``at`` time until the target (blocks, params or MACs) is met."""

    name = "depth"
    changes_structure = True
    follows_structure = True
    revives_pruned = False

    def __init__(
        self, remove: int | None = None, params: float | None = None, macs: float | None = None, importance: str = "influence",
        at: Sequence[float] = (0,), unit: str = "fraction", layers: Sequence[str] = (), penalty: float = 1e-3,
        gate_lr: float | None = None, calibration_batches: int = 4, compact: bool = True,
    ):
        targets = {"remove": remove, "params": params, "macs": macs}
        given = [key for key, value in targets.items() if value is not None]
        if len(given) != 1:
            raise ConfigError("stages.depth", given, "exactly one target: remove (blocks), params or macs (fractions of the model's)")
        if remove is not None and (isinstance(remove, bool) or not isinstance(remove, int) or remove < 1):
            raise ConfigError("stages.depth.remove", remove, "a whole number of blocks >= 1")
        for key in ("params", "macs"):
            value = targets[key]
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ConfigError(f"stages.depth.{key}", value, "a fraction in (0, 1) of the model's total to remove")
        if importance not in IMPORTANCE:
            raise ConfigError("stages.depth.importance", importance, IMPORTANCE)
        if unit not in UNITS:
            raise ConfigError("stages.depth.unit", unit, UNITS)
        if isinstance(at, (int, float)):
            at = (at,)
        if not at or list(at) != sorted(at):
            raise ConfigError("stages.depth.at", at, "a non-empty, increasing list of times at which blocks are removed")
        if not isinstance(penalty, (int, float)) or penalty < 0:
            raise ConfigError("stages.depth.penalty", penalty, "a weight >= 0 on the sum of the block gates")
        self.kind, self.amount = given[0], targets[given[0]]
        self.importance, self.times, self.unit, self.patterns = importance, tuple(at), unit, tuple(layers)
        self.weight, self.gate_lr, self.calibration_batches, self.compact = float(penalty), gate_lr, calibration_batches, compact
        self.removed: list[str] = []
        self.gates: BlockGates | None = None
        self.taylor: dict[str, float] = {}

    # -- building -------------------------------------------------------------------------------

    def setup(self, ctx: Context) -> None:
        model = ctx.module
        self.blocks: dict[str, Block] = {block.name: block for block in find_blocks(model, ctx.example_inputs, self.patterns)}
        self.steps = [0 if time == 0 else ctx.length.steps(time, self.unit, f"stages.depth.at[{i}]") for i, time in enumerate(self.times)]  # type: ignore[arg-type]
        _, _, self.total_macs = trace_blocks(model, ctx.example_inputs, [])
        self.total_params = sum(p.numel() for p in model.parameters())
        self._check_reachable()
        if self.importance in ("gate", "taylor"):
            if self.steps[0] == 0:
                raise ConfigError("stages.depth.at", self.times, f"times after step 0: importance {self.importance!r} learns from training steps first")
            self.gates = BlockGates(model, list(self.blocks))
            if self.importance == "gate":
                if ctx.optimizer is None:
                    raise ConfigError("stages.depth.importance", "gate", "an optimizer passed to the Pruner: the gates are trained with the model")
                lr = self.gate_lr if self.gate_lr is not None else ctx.optimizer.param_groups[0]["lr"]
                ctx.optimizer.add_param_group({"params": list(self.gates.gates.values()), "lr": lr, "weight_decay": 0.0})

    def _check_reachable(self) -> None:
        blocks = list(self.blocks.values())
        if self.kind == "remove" and self.amount > len(blocks):
            raise ConfigError("stages.depth.remove", self.amount, f"at most {len(blocks)}, the removable blocks: {[b.name for b in blocks]}")
        if self.kind == "params" and sum(b.params for b in blocks) < self.amount * self.total_params:
            raise ConfigError("stages.depth.params", self.amount, f"at most {sum(b.params for b in blocks) / self.total_params:.3f}: all removable blocks together hold no more")
        if self.kind == "macs" and sum(b.macs for b in blocks) < self.amount * self.total_macs:
            raise ConfigError("stages.depth.macs", self.amount, f"at most {sum(b.macs for b in blocks) / max(self.total_macs, 1):.3f}: all removable blocks together cost no more")

    # -- training -------------------------------------------------------------------------------

    def penalty(self, ctx: Context) -> Tensor | float:
        if self.importance == "gate" and self.gates is not None and self.gates.gates:
            return self.weight * self.gates.penalty()
        return 0.0

    def before_step(self, ctx: Context) -> None:
        if self.importance == "taylor" and self.gates is not None:
            for name, gate in self.gates.gates.items():
                if gate.grad is not None:
                    self.taylor[name] = self.taylor.get(name, 0.0) + abs(float(gate.grad))
                    gate.grad = None

    def after_step(self, ctx: Context) -> None:
        if self.importance == "gate" and self.gates is not None:
            self.gates.clamp_()

    def update(self, ctx: Context) -> None:
        if ctx.step not in self.steps:
            return
        index = self.steps.index(ctx.step) + 1
        names = self._choose(ctx, index / len(self.steps))
        remaps = [remap for name in names for remap in self._remove(ctx, name)]
        if ctx.step == self.steps[-1] and self.gates is not None:
            remaps += [ParameterRemap(self.gates.remove(name), None, ()) for name in list(self.gates.gates)]  # type: ignore[arg-type]
        ctx.announce_structure_change(remaps)
        if names:
            log.info("step %d: removed blocks %s", ctx.step, names)

    def scores(self, ctx: Context) -> dict[str, float]:
        """The importance of each remaining block now (lower goes first)."""
        remaining = [name for name in self.blocks if name not in self.removed]
        if self.importance == "influence":
            data = ctx.calibration.data
            batches = [inputs for inputs, _ in itertools.islice(iter(data), self.calibration_batches)] if data is not None else [ctx.example_inputs]
            return block_influence(ctx.module, remaining, batches)
        if self.importance == "gate":
            return {name: self.gates.values()[name] for name in remaining}  # type: ignore[union-attr]
        return {name: self.taylor.get(name, 0.0) for name in remaining}

    def _choose(self, ctx: Context, progress: float) -> list[str]:
        scores = self.scores(ctx)
        order = sorted(scores, key=scores.__getitem__)
        chosen: list[str] = []
        if self.kind == "remove":
            count = round(self.amount * progress) - len(self.removed)
            return order[:max(count, 0)]
        size = {"params": lambda b: b.params, "macs": lambda b: b.macs}[self.kind]
        total = self.total_params if self.kind == "params" else self.total_macs
        gone = sum(size(self.blocks[name]) for name in self.removed)
        for name in order:
            if gone >= self.amount * progress * total - 0.5:
                break
            chosen.append(name)
            gone += size(self.blocks[name])
        return chosen

    def _remove(self, ctx: Context, name: str) -> list[ParameterRemap]:
        remaps = remove_block(ctx.module, name)
        if self.gates is not None and name in self.gates.gates:
            remaps.append(ParameterRemap(self.gates.remove(name), None, ()))  # type: ignore[arg-type]
        self.removed.append(name)
        self.taylor.pop(name, None)
        return remaps

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """Block params and MACs were counted once, at setup; channel removal inside a block leaves them as upper bounds."""

    def finalize(self, ctx: Context) -> None:
        """Hugging Face models lose their removed layers for real and get an updated ``config``."""
        if self.compact:
            compact(ctx.module)

    def last_change(self, ctx: Context) -> int | None:
        return self.steps[-1]

    def state_dict(self) -> dict[str, Any]:
        gates = self.gates.state_dict() if self.gates else {}
        return {"removed": list(self.removed), "taylor": dict(self.taylor), "gates": gates, "gates_done": self.gates is not None and not gates}

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        """Repeat the saved removals on this (unpruned) model, so saved weights fit it."""
        unknown = [name for name in state.get("removed", []) if name not in self.blocks]
        if unknown:
            raise StateError(f"the saved depth state removed blocks {unknown} that this model's removable blocks {list(self.blocks)} do not include")
        remaps = [remap for name in state["removed"] for remap in self._remove(ctx, name)]
        if self.gates is not None:
            if state.get("gates_done", False):
                remaps += [ParameterRemap(self.gates.remove(n), None, ()) for n in list(self.gates.gates)]  # type: ignore[arg-type]
            else:
                self.gates.load_state_dict(state.get("gates", {}))
        self.taylor = dict(state.get("taylor", {}))
        ctx.announce_structure_change(remaps)
