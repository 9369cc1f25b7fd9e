"""Ordering and fairness policies: which pending gang the cycle tries next."""

from __future__ import annotations
