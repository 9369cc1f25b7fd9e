"""Wall-clock timestamps in the API's two formats (RFC 3339 seconds and MicroTime)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_second: tuple[int, str] = (-1, "")
"""The last second formatted: every write stamps a time or two (creationTimestamp,
managedFields, conditions), and formatting one was a twentieth of a write's CPU."""


def now_time() -> str:
    global _second
    second = int(time.time())
    if _second[0] != second:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _second[1]


def now_microtime() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
