"""DRA CEL device selectors (resource.k8s.io/v1), evaluated on the `cel` (cel-rust) runtime.

A selector sees one variable, `device`, with `driver`, `attributes` (domain -> name ->
value), `capacity` (domain -> name -> quantity) and `allowMultipleAllocations`, plus the
Kubernetes `quantity` and `semver` libraries and the string and set extensions.

Why it is built this way:
- The runtime converts Python values into CEL values when a variable is added to a
  `cel.Context`, and that conversion costs more than an evaluation. So each device gets
  one context, built once and memoised (`device_activation`), and every selector runs
  against it.
- The runtime only knows plain CEL values, so a quantity is the one-entry map
  `{"@quantity": "<exact fraction>"}` and a version `{"@semver": "<major.minor.patch[-pre]>"}`.
  Both texts are canonical (exact value; build metadata dropped), so `==` between equal
  quantities or versions is true, as in Kubernetes. The library functions are Python
  callbacks; the overloaded ones (`compareTo`, `isGreaterThan`, `isLessThan`) dispatch on
  the receiver's tag. Receiver calls like `q.compareTo(r)` reach them as `compareTo(q, r)`.
- `quantity("40Gi")` and `semver("1.2.3")` with literal arguments are replaced by their
  values before compiling: the Python round trip would otherwise double the cost of a
  typical capacity selector.
- An evaluation error (missing attribute, wrong types) never raises: `MatchResult` says the
  device does not match and carries the error text. (The Kubernetes allocator goes further
  and fails the whole allocation attempt on a CEL runtime error; callers that want that
  can treat `MatchResult.error` as fatal.)
- Kubernetes returns an empty map for an unknown domain (`device.attributes["x.com"]`), so
  `has(device.attributes["x.com"].a)` is false rather than an error. cel-rust raises a
  missing-key error instead; we then retry with that domain added as an empty map. The
  retry would be visible to expressions that inspect the domain key set, so it is skipped
  for expressions using `in`, `size` or comprehensions; those report the error.

Gaps versus Kubernetes:
- Type checking: Kubernetes rejects non-bool selectors when they are created. cel-rust has
  no type checker, so `compile_selector` evaluates the expression once against an empty
  probe device: a non-bool result or an undeclared name found there is a compile error.
  Anything the probe does not reach (e.g. `device.attributes["a.com"].model` alone) is
  caught only when evaluated, as `MatchResult(False, "must evaluate to bool, not ...")`.
  Also no `uint`/`int` distinction survives on results, and misuse of a quantity as a map
  (`q["@quantity"]`, `type(q) == map`) is not rejected.
- Not available: `cel.bind`, optional field and index syntax (`m.?f`, `m[?k]`),
  two-variable comprehensions, the regex `find`/`findAll`, URL, IP, CIDR, format, image and list
  (`isSorted`, `sum`, `min`, `max`) libraries, quantity `mul`/`div`/`divInt`, and the
  CEL cost limit.
- cel-rust compares across numeric types (`1 == 1.0`, `1 == 1u`) like Kubernetes with
  cross-type numeric comparisons enabled; equality between different types is false,
  not an error.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import cel as _cel
from cel import stdlib as _cel_stdlib

from controller.engine.errors import InvalidInput
from controller.engine.model import AttributeValue, Device, Version, attribute_identity
from controller.engine.quantity import parse_quantity

__all__ = [
    "CompiledSelector",
    "DeviceActivation",
    "MatchResult",
    "SelectorError",
    "compile_selector",
    "device_activation",
    "evaluate_many",
]

_QUANTITY_TAG = "@quantity"
_SEMVER_TAG = "@semver"
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_CACHE_LIMIT = 1 << 16
"""Entries per memo table before it is dropped wholesale (cheap, and keeps memory bounded)."""
_ACTIVATION_LIMIT = 1 << 15
"""Devices with a memoised activation; each holds about 11 KB (mostly the runtime's copy)."""


class SelectorError(InvalidInput):
    """A selector that cannot be compiled; `where` names the field, `what` the CEL error."""


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Whether a device satisfies a selector; `error` explains a failed evaluation."""

    matched: bool
    error: str | None = None


_MATCHED = MatchResult(True)
_NOT_MATCHED = MatchResult(False)


class _CelError(Exception):
    """Raised by library callbacks; the runtime turns it into a CEL evaluation error."""


# --- values ------------------------------------------------------------------------------

_SemverValue = tuple[int, int, int, tuple[int | str, ...]]

_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = rf"(?:{_NUM}|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"({_NUM})\.({_NUM})\.({_NUM})"
    rf"(?:-({_PRE_ID}(?:\.{_PRE_ID})*))?"
    rf"(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?"
)

_fractions: dict[str, Fraction] = {}
_semvers: dict[str, _SemverValue] = {}
_quantity_literals: dict[str, dict[str, str]] = {}


def _remember(table: dict[str, Any], key: str, value: Any) -> None:
    if len(table) >= _CACHE_LIMIT:
        table.clear()
    table[key] = value


def _quantity_value(amount: Fraction) -> dict[str, str]:
    return {_QUANTITY_TAG: str(amount)}


def _parse_semver(text: str, normalize: bool = False) -> _SemverValue:
    """Strict semver 2.0.0 like blang/semver; `normalize` as in Kubernetes' `semver(s, true)`."""
    if normalize:
        text = _normalize_semver(text)
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise _CelError(f"{text!r} is not a semantic version (e.g. 1.2.3, 1.0.0-rc.1)")
    major, minor, patch = int(match[1]), int(match[2]), int(match[3])
    if max(major, minor, patch) > _INT64_MAX:
        raise _CelError(f"{text!r}: version number out of range")
    pre: tuple[int | str, ...] = ()
    if match[4]:
        pre = tuple(int(p) if p.isdigit() else p for p in match[4].split("."))
    return (major, minor, patch, pre)


def _normalize_semver(text: str) -> str:
    """Drop a "v" prefix and leading zeros, and fill in a missing minor or patch with 0."""
    text = text.removeprefix("v")
    parts = text.split(".", 2)
    for i, part in enumerate(parts):
        if len(part) > 1:
            stripped = part.lstrip("0")
            if not stripped or stripped[0] not in "0123456789":
                stripped = "0" + stripped
            parts[i] = stripped
    if len(parts) < 3:
        if "+" in parts[-1] or "-" in parts[-1]:
            raise _CelError(f"{text!r}: a short version cannot have pre-release or build metadata")
        parts.extend(["0"] * (3 - len(parts)))
    return ".".join(parts)


def _semver_text(version: _SemverValue) -> str:
    major, minor, patch, pre = version
    core = f"{major}.{minor}.{patch}"
    return core + "-" + ".".join(str(p) for p in pre) if pre else core


def _semver_value(version: _SemverValue) -> dict[str, str]:
    text = _semver_text(version)
    _remember(_semvers, text, version)
    return {_SEMVER_TAG: text}


def _compare_semver(a: _SemverValue, b: _SemverValue) -> int:
    """Semver precedence: numbers, then a pre-release sorts before its release."""
    if a[:3] != b[:3]:
        return -1 if a[:3] < b[:3] else 1
    pa, pb = a[3], b[3]
    if pa == pb:
        return 0
    if not pa or not pb:
        return 1 if not pa else -1
    for x, y in zip(pa, pb, strict=False):
        if x == y:
            continue
        if isinstance(x, int) and isinstance(y, int):
            return -1 if x < y else 1
        if isinstance(x, int) or isinstance(y, int):
            return -1 if isinstance(x, int) else 1
        return -1 if x < y else 1
    return -1 if len(pa) < len(pb) else 1


def _tagged(value: object, tag: str) -> str | None:
    """The text of a tagged value (`{"@quantity": "..."}`), or None for anything else."""
    if type(value) is not dict or len(value) != 1:
        return None
    text = value.get(tag)
    return text if type(text) is str else None


def _as_quantity(value: object) -> Fraction | None:
    text = _tagged(value, _QUANTITY_TAG)
    if text is None:
        return None
    amount = _fractions.get(text)
    if amount is None:
        try:
            amount = Fraction(text)
        except ValueError:
            return None
        _remember(_fractions, text, amount)
    return amount


def _as_semver(value: object) -> _SemverValue | None:
    text = _tagged(value, _SEMVER_TAG)
    if text is None:
        return None
    version = _semvers.get(text)
    if version is None:
        try:
            version = _parse_semver(text)
        except _CelError:
            return None
        _remember(_semvers, text, version)
    return version


def _type_name(value: object) -> str:
    """The CEL name of a value's type, for error messages."""
    if value is None:
        return "null_type"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list):
        return "list"
    if _as_quantity(value) is not None:
        return "Quantity"
    if _as_semver(value) is not None:
        return "Semver"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, datetime):
        return "google.protobuf.Timestamp"
    if isinstance(value, timedelta):
        return "google.protobuf.Duration"
    return type(value).__name__


def _no_overload(function: str, *args: object) -> _CelError:
    types = ", ".join(_type_name(a) for a in args)
    return _CelError(f"no such overload: {function}({types})")


def _int_result(value: int, function: str) -> int:
    """Python ints outside int64 would silently reach CEL as doubles; refuse instead."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _CelError(f"{function}: integer overflow")
    return value


# --- the function library ----------------------------------------------------------------


def _fn_quantity(text: object) -> dict[str, str]:
    if not isinstance(text, str):
        raise _no_overload("quantity", text)
    cached = _quantity_literals.get(text)
    if cached is None:
        try:
            amount = parse_quantity(text)
        except InvalidInput as err:
            raise _CelError(err.what) from None
        cached = _quantity_value(amount)
        _remember(_quantity_literals, text, cached)
    return cached


def _fn_is_quantity(text: object) -> bool:
    if not isinstance(text, str):
        raise _no_overload("isQuantity", text)
    try:
        parse_quantity(text)
    except InvalidInput:
        return False
    return True


def _fn_semver(text: object, normalize: object = False) -> dict[str, str]:
    if not isinstance(text, str) or not isinstance(normalize, bool):
        raise _no_overload("semver", text, normalize)
    return _semver_value(_parse_semver(text, normalize))


def _fn_is_semver(text: object, normalize: object = False) -> bool:
    if not isinstance(text, str) or not isinstance(normalize, bool):
        raise _no_overload("isSemver", text, normalize)
    try:
        _parse_semver(text, normalize)
    except _CelError:
        return False
    return True


def _compare(function: str, a: object, b: object) -> int:
    """Order two quantities or two versions; anything else has no overload."""
    qa = _as_quantity(a)
    if qa is not None:
        qb = _as_quantity(b)
        if qb is None:
            raise _no_overload(function, a, b)
        return (qa > qb) - (qa < qb)
    va = _as_semver(a)
    if va is not None:
        vb = _as_semver(b)
        if vb is None:
            raise _no_overload(function, a, b)
        return _compare_semver(va, vb)
    raise _no_overload(function, a, b)


def _fn_compare_to(a: object, b: object) -> int:
    return _compare("compareTo", a, b)


def _fn_is_greater_than(a: object, b: object) -> bool:
    return _compare("isGreaterThan", a, b) > 0


def _fn_is_less_than(a: object, b: object) -> bool:
    return _compare("isLessThan", a, b) < 0


def _operand(function: str, a: object, b: object) -> tuple[Fraction, Fraction]:
    qa = _as_quantity(a)
    if qa is not None:
        if isinstance(b, int) and not isinstance(b, bool):
            return qa, Fraction(b)
        qb = _as_quantity(b)
        if qb is not None:
            return qa, qb
    raise _no_overload(function, a, b)


def _fn_add(a: object, b: object) -> dict[str, str]:
    qa, qb = _operand("add", a, b)
    return _quantity_value(qa + qb)


def _fn_sub(a: object, b: object) -> dict[str, str]:
    qa, qb = _operand("sub", a, b)
    return _quantity_value(qa - qb)


def _quantity_arg(function: str, value: object) -> Fraction:
    amount = _as_quantity(value)
    if amount is None:
        raise _no_overload(function, value)
    return amount


def _fits_int64(amount: Fraction) -> bool:
    return amount.denominator == 1 and _INT64_MIN <= amount.numerator <= _INT64_MAX


def _fn_as_integer(value: object) -> int:
    amount = _quantity_arg("asInteger", value)
    if not _fits_int64(amount):
        raise _CelError("cannot convert value to integer")
    return amount.numerator


def _fn_is_integer(value: object) -> bool:
    return _fits_int64(_quantity_arg("isInteger", value))


def _fn_as_approximate_float(value: object) -> float:
    amount = _quantity_arg("asApproximateFloat", value)
    try:
        return float(amount)
    except OverflowError:
        return math.copysign(math.inf, amount)


def _fn_sign(value: object) -> int:
    amount = _quantity_arg("sign", value)
    return (amount > 0) - (amount < 0)


def _version_part(function: str, index: int) -> Callable[[object], int]:
    def part(value: object) -> int:
        version = _as_semver(value)
        if version is None:
            raise _no_overload(function, value)
        number = version[index]
        assert isinstance(number, int)
        return _int_result(number, function)

    return part


_LIBRARY: dict[str, Callable[..., Any]] = {
    "quantity": _fn_quantity,
    "isQuantity": _fn_is_quantity,
    "compareTo": _fn_compare_to,
    "isGreaterThan": _fn_is_greater_than,
    "isLessThan": _fn_is_less_than,
    "add": _fn_add,
    "sub": _fn_sub,
    "asInteger": _fn_as_integer,
    "isInteger": _fn_is_integer,
    "asApproximateFloat": _fn_as_approximate_float,
    "sign": _fn_sign,
    "semver": _fn_semver,
    "isSemver": _fn_is_semver,
    "major": _version_part("major", 0),
    "minor": _version_part("minor", 1),
    "patch": _version_part("patch", 2),
    # Kubernetes' base environment has cel-go's string and set extensions; the cel
    # package ships Python versions of them.
    "charAt": _cel_stdlib.char_at,
    "indexOf": _cel_stdlib.index_of,
    "lastIndexOf": _cel_stdlib.last_index_of,
    "lowerAscii": _cel_stdlib.lower_ascii,
    "upperAscii": _cel_stdlib.upper_ascii,
    "replace": _cel_stdlib.replace,
    "split": _cel_stdlib.split,
    "substring": _cel_stdlib.substring,
    "trim": _cel_stdlib.trim,
    "join": _cel_stdlib.join,
    "strings.quote": _cel_stdlib.quote,
    "sets.contains": _cel_stdlib.sets_contains,
    "sets.equivalent": _cel_stdlib.sets_equivalent,
    "sets.intersects": _cel_stdlib.sets_intersects,
}


class _QuietLibraryFailures(logging.Filter):
    """cel logs a WARNING whenever a callback raises; ours raise to signal a CEL error,
    which `MatchResult.error` already reports, so the log line is noise (one per device)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Python function '"):
            return message.split("'", 2)[1] not in _LIBRARY
        return True


logging.getLogger("cel").addFilter(_QuietLibraryFailures())


# --- devices -----------------------------------------------------------------------------


class DeviceActivation:
    """A device as CEL sees it: the `device` value, and a context holding it and the library."""

    __slots__ = ("_padded", "context", "domains", "problem", "value")

    def __init__(self, value: dict[str, Any] | None, problem: InvalidInput | None = None) -> None:
        self.value = value
        self.problem = problem
        self.domains: frozenset[str] = frozenset()
        self.context: _cel.Context | None = None
        self._padded: dict[frozenset[str], DeviceActivation] = {}
        if value is not None:
            self.domains = frozenset(value["attributes"]) | frozenset(value["capacity"])
            self.context = _cel.Context(variables={"device": value}, functions=_LIBRARY)

    def padded(self, domains: frozenset[str]) -> DeviceActivation:
        """The same device with empty maps for unknown `domains`, as Kubernetes looks them up."""
        padded = self._padded.get(domains)
        if padded is None:
            assert self.value is not None
            value = dict(self.value)
            for field in ("attributes", "capacity"):
                value[field] = {**{d: {} for d in domains}, **self.value[field]}
            padded = self._padded[domains] = DeviceActivation(value)
        return padded


def _attribute_value(value: AttributeValue | Version, where: str) -> object:
    """The CEL value of an attribute: a bool stays a CEL bool and an int a CEL int (the
    runtime keeps Python's bool apart from int), a version becomes a tagged semver."""
    try:
        kind, plain = attribute_identity(value)
    except InvalidInput as err:
        raise InvalidInput(where, err.what) from None
    if kind == "version":
        assert isinstance(plain, str)
        try:
            return _semver_value(_parse_semver(plain))
        except _CelError as err:
            raise InvalidInput(where, str(err)) from None
    if kind == "int":
        assert isinstance(plain, int)
        if not _INT64_MIN <= plain <= _INT64_MAX:
            raise InvalidInput(where, f"{plain} does not fit in a 64-bit integer")
    return plain


def _build_activation(device: Device) -> DeviceActivation:
    where = f"device {device.key_text}"
    attributes: dict[str, dict[str, object]] = {}
    capacity: dict[str, dict[str, object]] = {}
    try:
        for key, value in device.attributes.items():
            domain, _, name = key.partition("/")
            attributes.setdefault(domain, {})[name] = _attribute_value(
                value, f"{where}: attributes[{key}]"
            )
        for key, text in device.capacity.items():
            domain, _, name = key.partition("/")
            amount = parse_quantity(text, where=f"{where}: capacity[{key}]")
            capacity.setdefault(domain, {})[name] = _quantity_value(amount)
    except InvalidInput as err:
        return DeviceActivation(None, err)
    return DeviceActivation(
        {
            "driver": device.driver,
            "attributes": attributes,
            "capacity": capacity,
            "allowMultipleAllocations": device.shareable,
        }
    )


def _content_key(device: Device) -> tuple[object, ...]:
    # The key is in it so errors name the right device; values are typed so an attribute
    # True and an attribute 1 (equal in Python) never share an activation.
    return (
        device.key,
        device.shareable,
        tuple((k, attribute_identity(v)) for k, v in sorted(device.attributes.items())),
        tuple(sorted(device.capacity.items())),
    )


# By identity first (the engine keeps its Device objects): the entry holds the device, so
# its id cannot be reused while cached. Then by content, for equal devices rebuilt from a
# re-listed ResourceSlice.
_by_id: dict[int, tuple[Device, DeviceActivation]] = {}
_by_content: dict[tuple[object, ...], DeviceActivation] = {}


def _activation(device: Device) -> DeviceActivation:
    entry = _by_id.get(id(device))
    if entry is not None and entry[0] is device:
        return entry[1]
    key = _content_key(device)
    activation = _by_content.get(key)
    if activation is None:
        activation = _build_activation(device)
        if len(_by_content) >= _ACTIVATION_LIMIT:
            _by_content.clear()
        _by_content[key] = activation
    if len(_by_id) >= _ACTIVATION_LIMIT:
        _by_id.clear()
    _by_id[id(device)] = (device, activation)
    return activation


def device_activation(device: Device) -> DeviceActivation:
    """The CEL activation for `device`, built once per device content and memoised.

    Raises `InvalidInput` if an attribute or capacity cannot be represented (a malformed
    version or quantity); `CompiledSelector.evaluate` reports that as a failed match.
    """
    activation = _activation(device)
    if activation.problem is not None:
        raise activation.problem
    return activation


# --- selectors ---------------------------------------------------------------------------

_CALLBACK_ERROR = re.compile(
    r"Python function call failed: \w+: (?P<message>.*)\. Check function arguments and their"
    r" types\.\Z",
    re.DOTALL,
)
_KEYSET_FUNCTIONS = frozenset({"@in", "size"})

# `quantity("40Gi")` with a literal argument is a constant; calling back into Python and
# converting the result costs about as much as the rest of a typical selector, so such
# calls are replaced by the constant they produce before compiling.
_FOLDABLE = re.compile(
    r"\b(?P<fn>quantity|semver)\(\s*(?P<q>[\"'])(?P<text>[^\"'\\\n]*)(?P=q)\s*"
    r"(?:,\s*(?P<normalize>true|false)\s*)?\)"
)


def _non_code_spans(expression: str) -> list[tuple[int, int]]:
    """Where string literals and // comments lie, so folding never rewrites inside them."""
    spans: list[tuple[int, int]] = []
    i, end = 0, len(expression)
    while i < end:
        char = expression[i]
        if expression.startswith("//", i):
            stop = expression.find("\n", i)
            stop = end if stop < 0 else stop
        elif char in "\"'":
            prefix = expression[max(0, i - 2) : i].lower()
            raw = "r" in prefix
            quote = char * 3 if expression.startswith(char * 3, i) else char
            stop = i + len(quote)
            while stop < end and not expression.startswith(quote, stop):
                stop += 2 if expression[stop] == "\\" and not raw else 1
            stop = min(end, stop + len(quote))
        else:
            i += 1
            continue
        spans.append((i, stop))
        i = stop
    return spans


def _fold_constants(expression: str) -> str:
    """Replace `quantity("...")` and `semver("...")` of valid literals by their values."""
    if "quantity" not in expression and "semver" not in expression:
        return expression
    spans = _non_code_spans(expression)
    pieces: list[str] = []
    done = 0
    for match in _FOLDABLE.finditer(expression):
        start = match.start()
        if any(a <= start < b for a, b in spans):
            continue
        if expression[:start].rstrip().endswith("."):
            continue  # x.quantity("1") is quantity(x, "1"): not ours to fold
        text, normalize = match["text"], match["normalize"]
        try:
            if match["fn"] == "quantity":
                if normalize is not None:
                    continue
                value = _quantity_value(parse_quantity(text))
            else:
                value = _semver_value(_parse_semver(text, normalize == "true"))
        except (InvalidInput, _CelError):
            continue  # left alone, so it fails at evaluation as it would in Kubernetes
        ((tag, canonical),) = value.items()
        pieces += [expression[done:start], f'{{"{tag}": "{canonical}"}}']
        done = match.end()
    return "".join(pieces) + expression[done:] if pieces else expression


def _error_text(exc: Exception) -> str:
    """A short message for a runtime error, without the runtime's advice paragraphs."""
    if isinstance(exc, KeyError) and exc.args:
        return f"no such key: {exc.args[0]}"
    text = str(exc)
    match = _CALLBACK_ERROR.search(text)
    if match is not None:
        return match["message"]
    return text.split(". ", 1)[0]


class CompiledSelector:
    """A compiled device selector; compile with `compile_selector`, which caches by text."""

    __slots__ = ("_may_pad", "_program", "expression")

    def __init__(self, expression: str, program: _cel.Program, folded: _cel.Program) -> None:
        self.expression = expression
        self._program = folded
        references = program.references()
        # Padding unknown domains is invisible unless the expression looks at key sets.
        self._may_pad = set(references["variables"]) <= {"device"} and not (
            _KEYSET_FUNCTIONS & set(references["functions"])
        )

    def __repr__(self) -> str:
        return f"CompiledSelector({self.expression!r})"

    def evaluate(self, device: Device) -> MatchResult:
        """Whether `device` matches; errors become a non-match that says why."""
        activation = _activation(device)
        if activation.context is None:
            return MatchResult(False, str(activation.problem))
        try:
            result = self._program.execute(activation.context)
        except Exception as exc:
            ok, result = self._retry(exc, activation)
            if not ok:
                return MatchResult(False, result)
        if result is True:
            return _MATCHED
        if result is False:
            return _NOT_MATCHED
        return MatchResult(False, f"must evaluate to bool, not {_type_name(result)}")

    def _retry(self, exc: Exception, activation: DeviceActivation) -> tuple[bool, Any]:
        """Redo a lookup that failed on an unknown domain with that domain as an empty map.

        Returns (True, result) or (False, error text).
        """
        padding: frozenset[str] = frozenset()
        while (
            self._may_pad
            and isinstance(exc, KeyError)
            and exc.args
            and isinstance(exc.args[0], str)
            and self._names_domain(exc.args[0])
            and exc.args[0] not in activation.domains
            and exc.args[0] not in padding
        ):
            padding |= {exc.args[0]}
            padded = activation.padded(padding)
            assert padded.context is not None
            try:
                return True, self._program.execute(padded.context)
            except Exception as again:
                exc = again
        return False, _error_text(exc)

    def _names_domain(self, key: str) -> bool:
        """Domains are looked up by string literal, e.g. device.attributes["gpu.example.com"]."""
        return f'"{key}"' in self.expression or f"'{key}'" in self.expression

    def _probe(self, where: str) -> None:
        """Reject what a type checker would: a non-bool result or an undeclared name."""
        probe = DeviceActivation(
            {"driver": "", "attributes": {}, "capacity": {}, "allowMultipleAllocations": False}
        )
        assert probe.context is not None
        try:
            result = self._program.execute(probe.context)
        except Exception as exc:
            ok, result = self._retry(exc, probe)
            if not ok:
                if str(result).startswith("Undefined variable or function"):
                    raise SelectorError(
                        where, f"CEL expression does not compile: {result}"
                    ) from None
                return
        if not isinstance(result, bool):
            raise SelectorError(
                where, f"must evaluate to bool or the unknown type, not {_type_name(result)}"
            )


_compiled: dict[str, CompiledSelector] = {}


def compile_selector(expression: str, *, where: str) -> CompiledSelector:
    """Compile once; cached by expression text. Raises `SelectorError` naming `where`."""
    selector = _compiled.get(expression)
    if selector is not None:
        return selector
    try:
        program = _cel.compile(expression)
    except Exception as exc:
        raise SelectorError(where, f"CEL expression does not compile: {exc}") from None
    folded_text = _fold_constants(expression)
    folded = program if folded_text == expression else _cel.compile(folded_text)
    selector = CompiledSelector(expression, program, folded)
    selector._probe(where)
    if len(_compiled) >= _CACHE_LIMIT:
        _compiled.clear()
    _compiled[expression] = selector
    return selector


def evaluate_many(selectors: Sequence[CompiledSelector], device: Device) -> MatchResult:
    """All selectors must match (a DeviceClass's and a request's): stops at the first miss."""
    for selector in selectors:
        result = selector.evaluate(device)
        if not result.matched:
            return result
    return _MATCHED
