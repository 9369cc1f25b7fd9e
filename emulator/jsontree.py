"""Copying JSON trees (dicts, lists, scalars): what every API object is, and much faster
than `copy.deepcopy`, which the emulator's hot paths (reads, writes, patches) would
otherwise spend most of their time in."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def clone(value: T) -> T:
    kind = type(value)
    if kind is dict:
        return {k: clone(v) for k, v in value.items()}  # type: ignore[attr-defined,return-value]
    if kind is list:
        return [clone(v) for v in value]  # type: ignore[attr-defined,return-value]
    return value
