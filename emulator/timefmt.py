"""MicroTime parsing: the server accepts exactly `2006-01-02T15:04:05.000000Z07:00`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_HEAD = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_ZONE = re.compile(r"Z|[+-]\d{2}:\d{2}")


class MicroTimeError(ValueError):
    pass


def parse_microtime(text: str) -> str:
    """The value normalised to UTC with 6 digits; errors use Go's time.Parse wording."""

    def fail(rest: str, element: str) -> MicroTimeError:
        return MicroTimeError(
            f'parsing time "{text}" as "{_LAYOUT}": cannot parse "{rest}" as "{element}"'
        )

    head = _HEAD.match(text)
    if head is None:
        raise fail(text, "2006")
    rest = text[head.end() :]
    fraction = re.match(r"\.\d{6}", rest)
    if fraction is None:
        raise fail(rest, ".000000")
    zone = rest[7:]
    if not _ZONE.fullmatch(zone):
        raise fail(zone, "Z07:00")
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
