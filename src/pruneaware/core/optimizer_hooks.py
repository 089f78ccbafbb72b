"""How a Pruner rides on a torch optimizer: step hooks that respect closures, and each pruned parameter's learning rate."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pruneaware.core.errors import UsageError


def attach_step_hooks(optimizer: torch.optim.Optimizer, before: Callable[[], None], after: Callable[[], None]) -> list[RemovableHandle]:
    """Run ``before`` just before ``optimizer.step()`` updates the weights and ``after`` right after it.

    Given a closure (Lightning, LBFGS), the closure runs inside ``step``, after pre-step hooks:
    ``before`` reads and zeroes gradients, so it has to wait for the closure, which is wrapped.
    """

    def pre_hook(optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        closure = kwargs["closure"] if "closure" in kwargs else (args[1] if len(args) > 1 else None)  # args[0] is the optimizer
        if closure is None:
            before()
            return None

        def closure_then_before() -> Any:
            loss = closure()
            before()
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_before}
        return (args[0], closure_then_before, *args[2:]), kwargs

    pre = optimizer.register_step_pre_hook(pre_hook)
    post = optimizer.register_step_post_hook(lambda optimizer, args, kwargs: after())
    return [pre, post]


def claim(optimizer: torch.optim.Optimizer, owner: object) -> None:
    """Mark ``optimizer`` as driving ``owner``; a second Pruner on it would prune every step twice, so it is refused."""
    current = getattr(optimizer, "_pruneaware_owner", None)
    if current is not None and current is not owner:
        raise UsageError(
            "this optimizer already drives a Pruner: two Pruners on one optimizer would both act at every step. "
            "Put every technique in one recipe (one Pruner), or call finalize() (or remove_hooks()) on the first one"
        )
    optimizer._pruneaware_owner = owner  # type: ignore[attr-defined]


def release(optimizer: torch.optim.Optimizer, owner: object) -> None:
    """Undo ``claim`` (the owner detached from the optimizer)."""
    if getattr(optimizer, "_pruneaware_owner", None) is owner:
        del optimizer._pruneaware_owner  # type: ignore[attr-defined]


class StepHooks:
    """A Pruner's attachment to its optimizer: claimed (one Pruner per optimizer) and hooked before and after every step."""

    def __init__(self, optimizer: torch.optim.Optimizer | None, owner: object, before: Callable[[], None], after: Callable[[], None]):
        self.optimizer, self.owner = optimizer, owner
        if optimizer is not None:
            claim(optimizer, owner)
        self.handles = attach_step_hooks(optimizer, before, after) if optimizer is not None else []

    def remove(self) -> None:
        """Detach from the optimizer; removing twice does nothing."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.optimizer is not None:
            release(self.optimizer, self.owner)


ELEMENTWISE_OPTIMIZERS = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam,
    torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adadelta, torch.optim.Rprop, torch.optim.ASGD,
)


def is_elementwise(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether each weight's update depends only on its own gradient history (torch's SGD/Adam family, not subclasses).

    Then what the optimizer keeps for a pruned weight reaches no other weight, and zeroing its
    gradient is only needed if the weight may come back. Optimizers that normalize or factor over a
    whole tensor (Adafactor, LAMB, Muon, LBFGS) and unknown ones are assumed not to be.
    """
    return type(optimizer) in ELEMENTWISE_OPTIMIZERS


class LearningRates:
    """The current learning rate of each pruned parameter, read from the param group that holds it (proximal updates need it).

    Groups are indexed once by name; channel removal swaps parameters inside their groups, so the
    index stays valid.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, params: Mapping[str, nn.Parameter]):
        group_of = {id(p): index for index, group in enumerate(optimizer.param_groups) for p in group["params"]}
        missing = [name for name, p in params.items() if p.requires_grad and id(p) not in group_of]
        if missing:
            raise UsageError(f"parameters {missing} are pruned but not in the optimizer; build the optimizer over model.parameters()")
        self.optimizer = optimizer
        self.group_index = {name: group_of[id(p)] for name, p in params.items() if id(p) in group_of}

    def current(self) -> dict[str, float]:
        """Each indexed parameter's learning rate now (a scheduler may have changed it); frozen parameters have none."""
        groups = self.optimizer.param_groups
        return {name: float(groups[index]["lr"]) for name, index in self.group_index.items()}
