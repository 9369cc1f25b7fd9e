"""Preemption policies: which whole admitted gangs to evict so that a gang fits."""

from __future__ import annotations
