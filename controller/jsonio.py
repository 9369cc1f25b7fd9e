"""JSON in and out of the API's bodies and watch streams, with orjson where it can.

Every request and every watch event is a JSON document on both sides (the controller's
client and the emulator's server), and the standard library's codec was a tenth to a
sixth of their CPU; orjson does the same work several times faster. Where orjson refuses a
document, the standard library has the last word: a body it accepts (`NaN`, a lone
surrogate, a byte order mark) is still accepted and its error message is the one
raised; a value orjson cannot write (an integer beyond 64 bits) is written by it.
What differs: text is written as UTF-8, not `\\u` escapes (as the API server writes
it), NaN as null; an integer beyond 64 bits is read as a float (as the API server
reads numbers in unstructured objects).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import orjson

DecodeError = json.JSONDecodeError
T = TypeVar("T")


def dumps(value: Any) -> bytes:
    """Compact JSON (no spaces after separators), UTF-8."""
    try:
        return orjson.dumps(value)
    except TypeError:  # beyond what orjson writes (64-bit integers, str keys)
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_line(value: Any) -> bytes:
    """`dumps` and a newline: one event of a watch stream."""
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return dumps(value) + b"\n"


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """A JSON document; `DecodeError` (json.JSONDecodeError) if it is not one."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)


def clone(value: T) -> T:
    """A deep copy of a JSON tree (dicts, lists, scalars), several times faster than
    `copy.deepcopy`, which keeps a memo and dispatches on every type."""
    kind = type(value)
    if kind is dict:
        return {k: clone(v) for k, v in value.items()}  # type: ignore[attr-defined,return-value]
    if kind is list:
        return [clone(v) for v in value]  # type: ignore[attr-defined,return-value]
    return value
