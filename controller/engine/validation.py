"""Field checks for engine types: each raises `InvalidInput` naming the field and value.

Constructors of the model and reservation types call these, so a malformed object (a
count of 1.5, a NaN creation time, an unknown enum string) is refused where it is built,
never deep inside an admission cycle. `bool` is not accepted where an int is meant, even
though Python treats it as one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from controller.engine.errors import InvalidInput

E = TypeVar("E", bound=StrEnum)

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def name(value: object, where: str) -> None:
    """A non-empty string."""
    if not isinstance(value, str):
        raise InvalidInput(where, f"must be a string, got {value!r}")
    if not value:
        raise InvalidInput(where, "must not be empty")


def optional_name(value: object, where: str) -> None:
    if value is not None:
        name(value, where)


def text(value: object, where: str) -> None:
    """Any string, empty included."""
    if not isinstance(value, str):
        raise InvalidInput(where, f"must be a string, got {value!r}")


def flag(value: object, where: str) -> None:
    if not isinstance(value, bool):
        raise InvalidInput(where, f"must be true or false, got {value!r}")


def integer(value: object, where: str, minimum: int | None = None, maximum: int = INT64_MAX) -> int:
    """An int (not a bool, not a float even if integral) within [minimum, maximum]."""
    if not is_int(value):
        raise InvalidInput(where, f"must be an integer, got {value!r}")
    assert isinstance(value, int)
    if minimum == 0 and value < 0:
        raise InvalidInput(where, f"must not be negative, got {value}")
    if minimum is not None and value < minimum:
        raise InvalidInput(where, f"must be >= {minimum}, got {value}")
    if value > maximum:
        raise InvalidInput(where, f"must be <= {maximum}, got {value}")
    return value


def number(value: object, where: str, minimum: float | None = None, positive: bool = False) -> None:
    """A finite int or float (not a bool); at least `minimum`, or > 0 if `positive`."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidInput(where, f"must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(where, f"must be a finite number, got {value!r}")
    if is_int(value) and abs(value) > INT64_MAX:
        raise InvalidInput(where, f"is out of range, got {value!r}")
    if positive and not value > 0:
        raise InvalidInput(where, f"must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInput(where, f"must be >= {minimum:g}, got {value!r}")


def optional_number(
    value: object, where: str, minimum: float | None = None, positive: bool = False
) -> None:
    if value is not None:
        number(value, where, minimum, positive)


def choice(kind: type[E], value: object, where: str) -> E:
    """The enum member for `value` (a member or its exact string value)."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        for member in kind:
            if member.value == value:
                return member
    allowed = ", ".join(m.value for m in kind)
    raise InvalidInput(where, f"must be one of {allowed}, got {value!r}")


def tuple_of(kind: type | tuple[type, ...], value: object, where: str) -> None:
    """A tuple (hashable: engine types are used as keys) whose items are all `kind`."""
    if not isinstance(value, tuple):
        raise InvalidInput(where, f"must be a tuple, got {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise InvalidInput(f"{where}[{i}]", f"must be a {names}, got {item!r}")


def labels(value: object, where: str) -> None:
    """A string -> string map (labels, node selectors); keys must not be empty."""
    if not isinstance(value, Mapping):
        raise InvalidInput(where, f"must be a map, got {value!r}")
    for key, item in value.items():
        name(key, f"{where} key")
        text(item, f"{where}[{key}]")


def resources(value: object, where: str) -> None:
    """Resource name -> non-negative integer amount in canonical units."""
    if not isinstance(value, Mapping):
        raise InvalidInput(where, f"must be a map of resource amounts, got {value!r}")
    for key, amount in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(where, f"resource name must be a non-empty string, got {key!r}")
        if not is_int(amount):
            raise InvalidInput(f"{where}[{key}]", f"must be an integer, got {amount!r}")
        if amount < 0:
            raise InvalidInput(f"{where}[{key}]", f"must not be negative, got {amount}")
        if amount > INT64_MAX:
            raise InvalidInput(f"{where}[{key}]", f"must be <= {INT64_MAX}, got {amount}")
