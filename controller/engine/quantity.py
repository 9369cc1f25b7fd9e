"""Kubernetes resource quantities, parsed exactly and turned into the engine's integer units.

Quantities are parsed to `Fraction`, never `float`, so "0.1" + "0.2" is exactly "0.3" and
"1Gi" is exactly 2**30: admission decisions compare sums against capacity and must not
drift. Parsing follows `resource.ParseQuantity` of Kubernetes, including its rounding: a
value finer than one nano unit is rounded away from zero to the next nano unit, so the
engine sees the same number the API server stores.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from controller.engine.errors import InvalidInput

_BINARY_SUFFIXES: dict[str, int] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_DECIMAL_SUFFIXES: dict[str, Fraction] = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}

# Sign, digits with at most one decimal point, then one suffix: binary (Ki..Ei), decimal SI
# (n..E) or a decimal exponent (e3, E-2). "1E" is exa, "1E3" is an exponent: the regex
# backtracks into the exponent branch when digits follow.
_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<whole>[0-9]*)(?:\.(?P<frac>[0-9]*))?"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_MAX_EXPONENT = 1000
"""Bound on decimal exponents, so "1e999999999" cannot make us build a gigantic integer."""

_NANO = 10**9
_MAX_CANONICAL = 2**63 - 1
"""Engine amounts are Kubernetes int64 values: larger quantities cannot be allocatable."""

_MEMORY_LIKE_PREFIXES = ("hugepages-",)
_MEMORY_LIKE = frozenset({"memory", "ephemeral-storage"})
_FORMAT_SUFFIXES = tuple(sorted(_BINARY_SUFFIXES.items(), key=lambda item: -item[1]))


def _not_a_quantity(value: object, where: str) -> InvalidInput:
    return InvalidInput(where, f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 16Gi, 1e3)")


def _round_to_nano(value: Fraction) -> Fraction:
    """Kubernetes keeps at most nano precision and rounds the magnitude up, never to zero."""
    if _NANO % value.denominator == 0:
        return value
    scaled = math.ceil(abs(value) * _NANO)
    return Fraction(scaled if value > 0 else -scaled, _NANO)


def _parse_text(text: str, original: object, where: str) -> Fraction:
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise _not_a_quantity(original, where)
    whole = match["whole"]
    frac = match["frac"] or ""
    if not whole and not frac:
        raise _not_a_quantity(original, where)
    suffix = match["suffix"] or ""
    try:
        # int() refuses very long digit strings (sys.int_info.str_digits_check_threshold).
        magnitude = Fraction(int(whole + frac or "0"), 10 ** len(frac))
    except ValueError:
        raise _not_a_quantity(original, where) from None
    if suffix in _BINARY_SUFFIXES:
        magnitude *= _BINARY_SUFFIXES[suffix]
    elif suffix in _DECIMAL_SUFFIXES:
        magnitude *= _DECIMAL_SUFFIXES[suffix]
    else:
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise InvalidInput(
                where, f"{original!r}: exponent {exponent} is out of range (|e| <= {_MAX_EXPONENT})"
            )
        magnitude *= Fraction(10) ** exponent
    value = -magnitude if match["sign"] == "-" else magnitude
    return _round_to_nano(value)


def parse_quantity(value: str | int | float, *, where: str = "quantity") -> Fraction:
    """Parse a Kubernetes quantity ("500m", "16Gi", "1e3", 2, 0.5) to an exact Fraction.

    Numbers come from YAML as int or float; a float is read through its shortest decimal
    form, so 0.1 means exactly 1/10 rather than the nearest binary double.
    """
    if isinstance(value, bool):
        raise _not_a_quantity(value, where)
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _not_a_quantity(value, where)
        return _parse_text(repr(value), value, where)
    if isinstance(value, str):
        return _parse_text(value, value, where)
    raise _not_a_quantity(value, where)


def is_memory_like(resource: str) -> bool:
    """Resources counted in bytes, which read best with binary suffixes."""
    return resource in _MEMORY_LIKE or resource.startswith(_MEMORY_LIKE_PREFIXES)


def to_canonical(resource: str, value: str | int | float, *, where: str) -> int:
    """Convert to engine units: cpu in millicores, everything else in base units; refuses
    negative amounts and amounts beyond int64.

    Rounds up, as Kubernetes does for requests: asking for a sliver of a resource must
    reserve some of it, never none.
    """
    amount = parse_quantity(value, where=where)
    if amount < 0:
        raise InvalidInput(where, f"must not be negative, got {value!r}")
    if resource == "cpu":
        amount *= 1000
    canonical = math.ceil(amount)
    if canonical > _MAX_CANONICAL:
        unit = "millicores" if resource == "cpu" else "units"
        raise InvalidInput(where, f"{value!r} is out of range (at most 2^63-1 {unit})")
    return canonical


def format_canonical(resource: str, amount: int) -> str:
    """Human text for an amount in engine units, for reasons and events ("1500m", "16Gi")."""
    if amount < 0:
        return "-" + format_canonical(resource, -amount)
    if resource == "cpu":
        cores, millis = divmod(amount, 1000)
        return str(cores) if millis == 0 else f"{amount}m"
    if is_memory_like(resource) and amount:
        for suffix, factor in _FORMAT_SUFFIXES:
            if amount % factor == 0:
                return f"{amount // factor}{suffix}"
    return str(amount)
