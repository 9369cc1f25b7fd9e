"""Copying JSON trees (dicts, lists, scalars): what every API object is, and much faster
than `copy.deepcopy`, which the emulator's hot paths (reads, writes, patches) would
otherwise spend most of their time in. The one copy lives with the JSON codec."""

from __future__ import annotations

from controller.jsonio import clone

__all__ = ["clone"]
