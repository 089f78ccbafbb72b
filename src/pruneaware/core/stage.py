"""The stage protocol: one behaviour of a pruning run (a mask rule, a regularizer, channel removal, ...).

A stage is a small object with a name and hooks it may leave empty. The Pruner calls every stage's
hook in the recipe's stage order; stages talk to the run only through the shared ``Context``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from pruneaware.core.errors import ConfigError

if TYPE_CHECKING:
    from pruneaware.core.context import Context
    from pruneaware.structured.surgery import ParameterRemap


class Stage:
    """Base class with every hook empty; a stage overrides the ones it needs.

    ``follows_structure``: whether the stage can follow parameters replaced by channel or layer
    removal (``structure_changed``); a stage that cannot is refused, naming itself, when a run that
    changes structure includes it. ``changes_structure``: the stage itself replaces parameters.
    """

    name: str = "stage"
    schedule: Any = None
    """The schedule behind ``target`` (for plots and reports), when the stage follows one."""
    follows_structure: bool = False
    changes_structure: bool = False
    revives_pruned: bool = True
    """Whether the stage may bring a pruned weight back still carrying its optimizer statistics (assumed of unknown stages)."""

    def setup(self, ctx: Context) -> None:
        """Once, when the Pruner is built (before the first forward pass)."""

    def before_step(self, ctx: Context) -> None:
        """Before each optimizer step, with this step's gradients in place."""

    def after_step(self, ctx: Context) -> None:
        """After each optimizer step, before the step is counted: updates of the weights the optimizer made."""

    def update(self, ctx: Context) -> None:
        """At step ``ctx.step`` (0 once when built, then after every step is counted): decide masks and shapes."""

    def end_step(self, ctx: Context) -> None:
        """After each step's masks are enforced: snapshots of the state the next step starts from."""

    def penalty(self, ctx: Context) -> Tensor | float:
        """A term for the loss (0.0 when the stage adds none)."""
        return 0.0

    def structure_changed(self, ctx: Context, remaps: Sequence[ParameterRemap]) -> None:
        """Parameters were replaced (channel removal): follow them, or refuse by name."""
        raise self.cannot_follow_structure()

    def finalize(self, ctx: Context) -> None:
        """Make the stage's effect permanent in the weights (``Pruner.finalize``)."""

    def target(self, ctx: Context) -> float | None:
        """The sparsity this stage aims for now (None: it sets no target)."""
        return None

    def may_revive(self, ctx: Context) -> bool:
        """Whether a weight pruned now may come back at a later step still carrying its optimizer statistics (splicing, learned gates).

        While no stage may and the optimizer is elementwise, the statistics of pruned weights never
        reach a weight, so the driver skips zeroing their gradients: the weights come out identical and
        the step is cheaper (Adam's square root is several times slower on the exact zeros it would keep).
        """
        return self.revives_pruned

    def last_change(self, ctx: Context) -> int | None:
        """The step after which this stage changes no mask and no shape (None: it may change them at any step)."""
        return 0

    def state_dict(self) -> dict[str, Any]:
        """What the stage needs to continue bit-for-bit after a resume."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any], ctx: Context) -> None:
        """Restore what ``state_dict`` returned."""

    def cannot_follow_structure(self) -> ConfigError:
        return ConfigError(
            f"stages.{self.name}",
            "with channel removal",
            f"a run without structure changes: stage {self.name!r} keeps per-parameter state it cannot reshape after channels are removed",
        )
