"""Editing YAML fixtures for API tests: one field changed or removed by a dotted path."""

from __future__ import annotations

import copy
from typing import Any

REMOVE = object()


def edited(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `doc` with the field at `path` (e.g. `spec.podSets.0.replicas`)
    replaced by `value`, or removed when `value` is REMOVE."""
    out: dict[str, Any] = copy.deepcopy(doc)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = out
    for part in parents:
        node = node[part]
    if value is REMOVE:
        del node[last]
    else:
        node[last] = value
    return out
