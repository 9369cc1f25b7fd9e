from fractions import Fraction

import pytest

from controller.engine.errors import InvalidInput
from controller.engine.quantity import format_canonical, parse_quantity, to_canonical


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", Fraction(1)),
        ("0", Fraction(0)),
        ("1.5", Fraction(3, 2)),
        (".5", Fraction(1, 2)),
        ("1.", Fraction(1)),
        ("+2", Fraction(2)),
        ("-2", Fraction(-2)),
        ("007", Fraction(7)),
        ("500m", Fraction(1, 2)),
        ("250u", Fraction(1, 4000)),
        ("3n", Fraction(3, 10**9)),
        ("2k", Fraction(2000)),
        ("1M", Fraction(10**6)),
        ("1G", Fraction(10**9)),
        ("1T", Fraction(10**12)),
        ("1P", Fraction(10**15)),
        ("1E", Fraction(10**18)),
        ("1Ki", Fraction(1024)),
        ("1Mi", Fraction(2**20)),
        ("16Gi", Fraction(16 * 2**30)),
        ("1Ti", Fraction(2**40)),
        ("1Pi", Fraction(2**50)),
        ("1Ei", Fraction(2**60)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("1e3", Fraction(1000)),
        ("1E3", Fraction(1000)),
        ("1e+3", Fraction(1000)),
        ("2.5e-3", Fraction(1, 400)),
        ("-1.5k", Fraction(-1500)),
    ],
)
def test_parse_quantity_accepts_kubernetes_syntax(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1n", Fraction(1, 10**9)),
        ("1.0000000001", Fraction(1_000_000_001, 10**9)),
        ("-0.1n", Fraction(-1, 10**9)),
    ],
)
def test_parse_quantity_rounds_below_nano_away_from_zero(text: str, expected: Fraction) -> None:
    assert parse_quantity(text) == expected


NOT_QUANTITIES = ["", " 1", "1 ", ".", "+", "-", "Mi", "12Qi", "1K", "1KiB", "1e", "1e3.5", "1,5"]


@pytest.mark.parametrize("text", [*NOT_QUANTITIES, "1.2.3", "0x10"])
def test_parse_quantity_rejects_other_text(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not a Kubernetes quantity"):
        parse_quantity(text)


def test_parse_quantity_error_names_where_and_value() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_quantity("12Qi", where="node n1: allocatable[memory]")
    assert info.value.where == "node n1: allocatable[memory]"
    assert info.value.what == "'12Qi' is not a Kubernetes quantity (e.g. 500m, 2, 16Gi, 1e3)"


def test_parse_quantity_rejects_huge_exponents() -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        parse_quantity("1e999999999")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, Fraction(2)), (0.5, Fraction(1, 2)), (0.1, Fraction(1, 10)), (1e-3, Fraction(1, 1000))],
)
def test_parse_quantity_reads_numbers_by_their_decimal_form(
    value: int | float, expected: Fraction
) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), None, [1]])
def test_parse_quantity_rejects_non_numbers(value: object) -> None:
    with pytest.raises(InvalidInput):
        parse_quantity(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("resource", "value", "expected"),
    [
        ("cpu", "500m", 500),
        ("cpu", "1", 1000),
        ("cpu", 2, 2000),
        ("cpu", 0.25, 250),
        ("cpu", "0.0001", 1),
        ("cpu", "1500u", 2),
        ("memory", "1Gi", 1073741824),
        ("memory", "1e3", 1000),
        ("memory", "1.5", 2),
        ("memory", "100m", 1),
        ("ephemeral-storage", "10G", 10**10),
        ("pods", "110", 110),
        ("nvidia.com/gpu", "8", 8),
        ("devices/gpu", 4, 4),
        ("cpu", "0", 0),
    ],
)
def test_to_canonical_converts_and_rounds_up(
    resource: str, value: str | int | float, expected: int
) -> None:
    assert to_canonical(resource, value, where="test") == expected


def test_to_canonical_rejects_negative_amounts() -> None:
    with pytest.raises(InvalidInput, match="must not be negative") as info:
        to_canonical("cpu", "-1", where="podSet a: requests[cpu]")
    assert info.value.where == "podSet a: requests[cpu]"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "nan is not a Kubernetes quantity"),
        (float("inf"), "inf is not a Kubernetes quantity"),
        (float("-inf"), "-inf is not a Kubernetes quantity"),
        (1e400, "inf is not a Kubernetes quantity"),
        ("1e400", "'1e400' is out of range (at most 2^63-1 millicores)"),
        ("9223372036854775807", "is out of range (at most 2^63-1 millicores)"),
        (2**63, "is out of range (at most 2^63-1 millicores)"),
        ("-1", "must not be negative, got '-1'"),
        (-0.5, "must not be negative, got -0.5"),
        ("1.5.3Gi", "'1.5.3Gi' is not a Kubernetes quantity"),
        ("", "'' is not a Kubernetes quantity"),
        (" 1", "' 1' is not a Kubernetes quantity"),
        ("1Gib", "'1Gib' is not a Kubernetes quantity"),
        ("NaN", "'NaN' is not a Kubernetes quantity"),
        ("inf", "'inf' is not a Kubernetes quantity"),
    ],
)
def test_to_canonical_refuses_what_no_resource_can_be(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        to_canonical("cpu", value, where="podSet a: requests[cpu]")  # type: ignore[arg-type]
    assert info.value.where == "podSet a: requests[cpu]"
    assert message in info.value.what


def test_to_canonical_accepts_the_largest_int64_amount() -> None:
    assert to_canonical("memory", str(2**63 - 1), where="test") == 2**63 - 1


def test_to_canonical_passes_where_to_parse_errors() -> None:
    with pytest.raises(InvalidInput) as info:
        to_canonical("memory", "12Qi", where="node n1: allocatable[memory]")
    assert info.value.where == "node n1: allocatable[memory]"


@pytest.mark.parametrize(
    ("resource", "amount", "expected"),
    [
        ("cpu", 2000, "2"),
        ("cpu", 1500, "1500m"),
        ("cpu", 1, "1m"),
        ("cpu", 0, "0"),
        ("memory", 16 * 2**30, "16Gi"),
        ("memory", 1536 * 2**20, "1536Mi"),
        ("memory", 2**60, "1Ei"),
        ("memory", 1000, "1000"),
        ("memory", 0, "0"),
        ("ephemeral-storage", 2048, "2Ki"),
        ("hugepages-2Mi", 4 * 2**20, "4Mi"),
        ("pods", 1024, "1024"),
        ("nvidia.com/gpu", 8, "8"),
        ("memory", -(2**30), "-1Gi"),
    ],
)
def test_format_canonical_reads_like_kubernetes(resource: str, amount: int, expected: str) -> None:
    assert format_canonical(resource, amount) == expected


@pytest.mark.parametrize(
    ("resource", "text"), [("cpu", "1500m"), ("memory", "16Gi"), ("memory", "1536Mi")]
)
def test_format_canonical_round_trips_through_to_canonical(resource: str, text: str) -> None:
    amount = to_canonical(resource, text, where="test")
    assert to_canonical(resource, format_canonical(resource, amount), where="test") == amount
