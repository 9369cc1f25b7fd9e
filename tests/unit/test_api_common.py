"""Specification of the shared API building blocks: quantities, names, conditions, paths."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from controller.api.common import Conditions, Quantity, parse_quantity
from controller.api.errors import format_path, format_validation_error


class Holder(BaseModel):
    value: Quantity


class WithConditions(BaseModel):
    conditions: Conditions


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (4, Decimal(4)),
        ("4", Decimal(4)),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("1k", Decimal(1000)),
        ("1Ki", Decimal(1024)),
        ("4Gi", Decimal(4 * 2**30)),
        ("1Ti", Decimal(2**40)),
        ("2E", Decimal(2 * 10**18)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("100n", Decimal("1e-7")),
        ("+3", Decimal(3)),
        ("-2m", Decimal("-0.002")),
    ],
)
def test_quantities_parse_to_exact_values(text: int | str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1.2.3", "1 Gi", "1gi", "Gi", "1e", "0x10", "1KiB"])
def test_malformed_quantities_do_not_parse(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize("value", [0, 8, "8", "250m", "64Gi", "1e3", "+1"])
def test_quantity_field_keeps_integers_and_strings_as_written(value: int | str) -> None:
    assert Holder(value=value).value == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "must not be negative (got -1)"),
        ("-1", "must not be negative (got '-1')"),
        ("-0", "must not be negative (got '-0')"),
        ("ten", "must be a Kubernetes quantity such as '2', '500m', '1.5' or '4Gi' (got 'ten')"),
        (
            1.5,
            "must be an integer or a quantity string such as '500m' or '4Gi' (got 1.5); "
            "write it as a string, e.g. '1.5'",
        ),
        (True, "must be an integer or a quantity string such as '500m' or '4Gi' (got true)"),
        (None, "must be an integer or a quantity string such as '500m' or '4Gi' (got null)"),
    ],
)
def test_quantity_field_rejects_negatives_floats_and_garbage(value: Any, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Holder(value=value)

    assert format_validation_error(caught.value, "x") == f"x: value: {problem}"


def test_condition_types_are_unique() -> None:
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "AllPodsReady",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }

    with pytest.raises(ValidationError) as caught:
        WithConditions.model_validate({"conditions": [condition, {**condition, "status": "False"}]})

    assert format_validation_error(caught.value, "x") == (
        "x: conditions[1].type: duplicate condition type 'Ready'"
    )


@pytest.mark.parametrize(
    ("reason", "ok"),
    [("QuotaReserved", True), ("Quota_Reserved", True), ("quota reserved", False), ("", False)],
)
def test_condition_reason_is_camel_case(reason: str, ok: bool) -> None:
    condition = {
        "type": "Admitted",
        "status": "Unknown",
        "reason": reason,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }
    if ok:
        WithConditions.model_validate({"conditions": [condition]})
    else:
        with pytest.raises(ValidationError, match="must be CamelCase"):
            WithConditions.model_validate({"conditions": [condition]})


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("spec", "podSets", 0, "replicas"), "spec.podSets[0].replicas"),
        (("status", "quotaCharged", "nvidia.com/gpu"), "status.quotaCharged[nvidia.com/gpu]"),
        ((0, "name"), "[0].name"),
        ((), ""),
    ],
)
def test_paths_use_dots_for_fields_and_brackets_for_indexes_and_odd_keys(
    path: tuple[str | int, ...], text: str
) -> None:
    assert format_path(path) == text
