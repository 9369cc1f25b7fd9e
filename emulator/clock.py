"""Wall-clock timestamps in the API's two formats (RFC 3339 seconds and MicroTime)."""

from __future__ import annotations

from datetime import UTC, datetime


def now_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_microtime() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
