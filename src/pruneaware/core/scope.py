"""Scope: which parameters a recipe prunes or regularizes, chosen by module type and name pattern."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from pruneaware.core.errors import ScopeError

DEFAULT_MODULE_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d")


@dataclass(frozen=True)
class Scope:
    """Parameters named ``<module>.<parameter>`` of modules whose type (or a base class) is in ``modules``.

    ``include`` and ``exclude`` are glob patterns on module names (``layer1.*``, ``*.fc``);
    ``skip_last`` leaves the last matching module, normally the classifier, dense.
    Biases and normalization layers are out of scope unless asked for, because pruning them
    saves almost nothing and hurts accuracy.
    """

    modules: tuple[str, ...] = DEFAULT_MODULE_TYPES
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    parameter: str = "weight"
    skip_last: bool = True

    def select(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters in scope, by qualified name, in module order; errors when nothing matches."""
        names = [name for name, _ in model.named_modules()]
        for pattern in (*self.include, *self.exclude):
            if not any(fnmatchcase(name, pattern) for name in names):
                raise ScopeError(
                    f"scope pattern {pattern!r} matches no module; module names look like: {_examples(names)}"
                )
        typed = [
            (name, module)
            for name, module in model.named_modules()
            if _type_matches(module, self.modules) and isinstance(getattr(module, self.parameter, None), nn.Parameter)
        ]
        excluded = [(name, module) for name, module in typed if any(fnmatchcase(name, p) for p in self.exclude)]
        candidates = [
            (name, module)
            for name, module in typed
            if any(fnmatchcase(name, p) for p in self.include) and (name, module) not in excluded
        ]
        if self.skip_last and candidates:
            excluded.append(candidates.pop())
        # A tied parameter (a classifier sharing its embedding's weight) is one parameter: left out under any name, it stays out.
        left_out = {id(getattr(module, self.parameter)) for _, module in excluded}
        selected: dict[str, nn.Parameter] = {}
        for name, module in candidates:
            param = getattr(module, self.parameter)
            if id(param) not in left_out:
                left_out.add(id(param))  # tied weights are pruned once, under their first name
                selected[f"{name}.{self.parameter}" if name else self.parameter] = param
        if not selected:
            types = sorted({type(m).__name__ for m in model.modules()})
            raise ScopeError(
                f"scope selects no parameter: module types {list(self.modules)} with include={list(self.include)}, "
                f"exclude={list(self.exclude)}, skip_last={self.skip_last}; this model has module types {types}"
            )
        return selected


def modules_matching(model: nn.Module, patterns: tuple[str, ...]) -> list[nn.Module]:
    """Modules whose names match any glob in ``patterns``; a pattern matching nothing is a ScopeError."""
    named = list(model.named_modules())
    matched: list[nn.Module] = []
    for pattern in patterns:
        hits = [module for name, module in named if fnmatchcase(name, pattern)]
        if not hits:
            raise ScopeError(f"pattern {pattern!r} matches no module; module names look like: {_examples([n for n, _ in named])}")
        matched.extend(hits)
    return matched


def last_module_of_type(model: nn.Module, type_names: tuple[str, ...] = DEFAULT_MODULE_TYPES) -> nn.Module | None:
    """The last registered module of one of ``type_names``: normally the classifier."""
    found = [module for module in model.modules() if _type_matches(module, type_names)]
    return found[-1] if found else None


def _type_matches(module: nn.Module, type_names: tuple[str, ...]) -> bool:
    return any(cls.__name__ in type_names for cls in type(module).__mro__)


def _examples(names: list[str], limit: int = 8) -> str:
    shown = [repr(name) for name in names if name][:limit]
    return ", ".join(shown) + (", ..." if len(names) - 1 > limit else "")
