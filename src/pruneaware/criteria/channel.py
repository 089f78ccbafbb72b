"""Channel criteria: how much each coupled channel group matters, by name in ``CHANNEL_CRITERIA`` (magnitude, input-side magnitude, BN scale, Taylor, Fisher, random).

The gradient ones (first-order Taylor and the Fisher diagonal) observe training:
gradients exist before the optimizer step, not after it, where channels are removed; so these
criteria accumulate a statistic of (weight, gradient) at every pre-step hook over the steps since
the last ranking or removal, and score from it when the ranking asks. The window restarts after
each ranking or removal (``reset``), so statistics never refer to replaced parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from pruneaware.core.errors import StateError, UsageError
from pruneaware.core.registry import Registry
from pruneaware.structured.slicing import ChannelLayout


def normalized(scores: Tensor) -> Tensor:
    """Scores divided by their mean, so groups of different sizes rank together; all-zero scores stay zero."""
    mean = scores.mean()
    return torch.where(mean > 0, scores / mean.clamp_min(torch.finfo(scores.dtype).tiny), scores)


class GradientImportance(tp.importance.Importance):
    """Scores channel groups from a per-element statistic of (weight, gradient) summed over observed steps."""

    name = "gradient"

    def __init__(self) -> None:
        self.sums: dict[nn.Parameter, Tensor] = {}
        self.steps = 0

    def statistic(self, param: Tensor, grad: Tensor) -> Tensor:
        """What one step contributes per element."""
        raise NotImplementedError

    def element_scores(self, param: Tensor, mean: Tensor) -> Tensor:
        """Per-element importance from the mean statistic over the window."""
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        """True once gradients of at least one step since the last ranking or removal have been observed."""
        return self.steps > 0

    @torch.no_grad()
    def observe(self, model: nn.Module) -> None:
        """Add this step's statistic for every parameter with a gradient (call before the optimizer step)."""
        for param in model.parameters():
            if param.grad is None:
                continue
            value = self.statistic(param.detach(), param.grad.detach()).float()
            if param in self.sums:
                self.sums[param].add_(value)
            else:
                self.sums[param] = value.clone()
        self.steps += 1

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor | None:
        if not self.ready:
            raise UsageError(
                f"group importance {self.name!r} scores from gradients, and none were observed since the last ranking: "
                "schedule channel updates after at least one optimizer step (or use 'l2' to remove channels before training)"
            )
        layout = ChannelLayout([group])
        if not layout.slices:
            return None
        return normalized(layout.sums(self._scores))

    def _scores(self, param: nn.Parameter) -> Tensor:
        """Element scores of ``param``; zero where no gradient was observed (frozen layers)."""
        total = self.sums.get(param)
        if total is None:
            return torch.zeros_like(param, dtype=torch.float32)
        return self.element_scores(param.detach().float(), total / self.steps)

    def reset(self) -> None:
        """Start a new window (after a ranking or removal: the statistics described the channels as they were)."""
        self.sums.clear()
        self.steps = 0

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """The window's statistics by parameter name (a resumed run ranks exactly as the original)."""
        names = {param: name for name, param in model.named_parameters()}
        return {"steps": self.steps, "sums": {names[p]: total.clone().cpu() for p, total in self.sums.items() if p in names}}

    def load_state_dict(self, state: Mapping[str, Any], model: nn.Module) -> None:
        """Restore ``state_dict``; names and shapes must fit the model (after its removals were replayed)."""
        params = dict(model.named_parameters())
        sums = state.get("sums", {})
        for name, total in sums.items():
            if name not in params or params[name].shape != total.shape:
                shape = tuple(params[name].shape) if name in params else None
                raise StateError(
                    f"saved gradient statistics for {name!r} (shape {tuple(total.shape)}) do not fit this model "
                    f"(shape {shape}); load the pruner state into the model it was saved from"
                )
        self.sums = {params[name]: total.to(params[name].device).clone() for name, total in sums.items()}
        self.steps = int(state.get("steps", 0))


class TaylorImportance(GradientImportance):
    """First-order Taylor |mean_t(w * dL/dw)| (Molchanov et al. 2017), summed over each channel's elements."""

    name = "taylor"

    def statistic(self, param: Tensor, grad: Tensor) -> Tensor:
        return param * grad

    def element_scores(self, param: Tensor, mean: Tensor) -> Tensor:
        return mean.abs()


class FisherImportance(GradientImportance):
    """Optimal Brain Damage saliency 0.5 * H_ii * w_i^2 (LeCun et al. 1990), H_ii estimated by the Fisher diagonal.

    F_ii = mean_t(g_i^2) over the mini-batch gradients training computes anyway (one squared
    gradient per step); per-sample gradients would estimate the empirical Fisher more exactly but
    cost a backward pass per sample.
    """

    name = "fisher"

    def statistic(self, param: Tensor, grad: Tensor) -> Tensor:
        return grad.square()

    def element_scores(self, param: Tensor, mean: Tensor) -> Tensor:
        return 0.5 * mean * param.square()


class InputMagnitudeImportance(tp.importance.GroupMagnitudeImportance):
    """L2 norm of the weights that *read* each channel (the input slices of the layers it feeds), as modelopt's FastNAS
    ranks channels. Behind BatchNorm a convolution's own filter norm says little (the norm rescales it); what the next
    layers do with the channel is what it is worth. Groups that feed no layer fall back to the whole group's norm."""

    READERS = (tp.pruner.function.prune_conv_in_channels, tp.pruner.function.prune_linear_in_channels)

    def __init__(self) -> None:
        super().__init__(p=2)

    def __call__(self, group: Any) -> Tensor:
        readers = [item for item in group if item.dep.pruning_fn in self.READERS]
        return super().__call__(_Items(readers) if readers else group)


class _Items(list):
    """A group's items as a list: what ``GroupMagnitudeImportance`` iterates and indexes."""


CHANNEL_CRITERIA: Registry[Any] = Registry("structured.importance")
"""Channel (group) criteria by name, for ``structured.importance``: each factory builds a Torch-Pruning importance."""
CHANNEL_CRITERIA.register("l1")(lambda: tp.importance.GroupMagnitudeImportance(p=1))
CHANNEL_CRITERIA.register("l2")(lambda: tp.importance.GroupMagnitudeImportance(p=2))
CHANNEL_CRITERIA.register("l2_input")(InputMagnitudeImportance)
CHANNEL_CRITERIA.register("bn_scale")(lambda: tp.importance.BNScaleImportance())
CHANNEL_CRITERIA.register("taylor")(TaylorImportance)
CHANNEL_CRITERIA.register("fisher")(FisherImportance)
CHANNEL_CRITERIA.register("hessian")(FisherImportance)  # the Fisher diagonal estimates the Hessian's
CHANNEL_CRITERIA.register("random")(lambda: tp.importance.RandomImportance())
