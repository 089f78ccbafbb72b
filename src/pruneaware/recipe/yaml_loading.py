"""YAML reading that refuses a key given twice in one mapping (plain ``yaml.safe_load`` keeps the last silently)."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice."""

    def __init__(self, key: object, line: int):
        self.key = key
        self.line = line
        super().__init__(f"key {key!r} appears twice in one mapping (line {line}); keep one")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader whose mappings reject duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' may be overridden by the keys beside it
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_strict(text: str) -> Any:
    """Parse YAML like ``yaml.safe_load``, but a key repeated within one mapping is a DuplicateKeyError."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
