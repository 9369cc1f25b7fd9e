"""Placement policies: which nodes, devices and topology domains a gang gets."""

from __future__ import annotations
