"""Specification of the CEL cost estimator: the API server's static estimate, reproduced.

Calibrated on the real API server's answers for the CRDs of commit 4e15d9e (see
tests/fixtures/README.md); the smaller cases are worked out by hand from the upstream
cost model (cel-go checker/cost.go, apiextensions-apiserver validation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api.celcost import CelCostError, rule_cost
from controller.api.crdcost import (
    CRD_COST_LIMIT,
    PER_RULE_COST_LIMIT,
    over_budget,
    schema_cost,
    schema_decl_type,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFUSED_QUOTA_RULE = (
    "openAPIV3Schema.properties[spec].properties[quota].items.x-kubernetes-validations[1].rule"
)


def old_schema(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((FIXTURES / f"{name}.phalanx.dev.4e15d9e.yaml").read_text("utf-8"))
    schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def cost_of(rule: str, schema: dict[str, Any]) -> int:
    self_type = schema_decl_type(schema)
    assert self_type is not None
    return rule_cost(rule, self_type)


def with_rule(schema: dict[str, Any], rule: str) -> dict[str, Any]:
    return {**schema, "x-kubernetes-validations": [{"rule": rule, "message": "m"}]}


# Calibration on the real API server's answers --------------------------------------------


def test_old_quota_rule_is_over_the_per_rule_limit_by_the_factor_the_server_reported() -> None:
    [rule] = [r for r in schema_cost(old_schema("queues")).rules if r.path == REFUSED_QUOTA_RULE]

    assert f"{rule.factor:.1f}" == "16.1"
    assert rule.factor == pytest.approx(16.1, rel=0.03)


def test_old_queue_schema_is_over_the_total_limit_by_the_factor_the_server_reported() -> None:
    cost = schema_cost(old_schema("queues"))

    assert f"{cost.factor:.1f}" == "1.6"
    assert cost.factor == pytest.approx(1.6, rel=0.03)


def test_old_queue_schema_has_exactly_the_refusals_the_server_gave() -> None:
    problems = over_budget(schema_cost(old_schema("queues")))

    assert len(problems) == 2
    assert problems[0].startswith(f"{REFUSED_QUOTA_RULE}: estimated cost ")
    assert problems[1].startswith("openAPIV3Schema: estimated total cost ")


def test_old_gangjob_schema_is_within_both_limits_as_the_server_found() -> None:
    cost = schema_cost(old_schema("gangjobs"))

    assert cost.rules
    assert over_budget(cost) == []


def test_recorded_widget_crd_the_server_created_is_within_both_limits() -> None:
    doc = yaml.safe_load((FIXTURES / "widgets.tx.example.com.yaml").read_text("utf-8"))
    cost = schema_cost(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"])

    assert any(r.path.endswith("messageExpression") for r in cost.rules)
    assert over_budget(cost) == []


def test_message_expression_is_counted_once_whatever_the_cardinality() -> None:
    rule = {"rule": "self == oldSelf", "messageExpression": "'was ' + oldSelf", "message": "m"}
    items = {**STRING_100, "x-kubernetes-validations": [rule]}
    schema = {
        "type": "object",
        "properties": {"names": {"type": "array", "maxItems": 8, "items": items}},
    }

    check, message = schema_cost(schema).rules
    # 'was ' + oldSelf: ceil((4 + 400) * 0.1) for the concatenation, 1 for oldSelf.
    assert (check.cardinality, message.cardinality, message.cost) == (8, 1, 42)


# The cost model, case by case ------------------------------------------------------------

STRING_100 = {"type": "string", "maxLength": 100}


def test_string_comparison_costs_a_tenth_per_byte_of_four_bytes_a_character() -> None:
    # 100 characters may be 400 bytes: ceil(400 * 0.1) = 40, plus 1 per identifier.
    assert cost_of("self == oldSelf", STRING_100) == 42


def test_string_without_max_length_is_sized_by_the_request_limit() -> None:
    # (3 MiB - 2 quotes) * 0.1 rounded up, plus the two identifiers.
    assert cost_of("self == oldSelf", {"type": "string"}) == 314573 + 2


def test_uniqueness_check_costs_max_items_squared_comparisons() -> None:
    names = {
        "type": "array",
        "maxItems": 64,
        "items": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}},
    }
    # per comparison 26 + 4 selections; exists_one adds 2 a step and 1 + 2 once,
    # all adds 2 + 2 a step and 2 once: 2 + 64 * (2 + 1 + (3 + 64 * 32)).
    rule = "self.all(x, self.exists_one(y, y.name == x.name))"

    assert cost_of(rule, names) == 131458


def test_presence_test_costs_only_its_operand() -> None:
    assert cost_of("has(self.a)", {"type": "object", "properties": {"a": STRING_100}}) == 1


def test_quantity_of_an_unbounded_int_or_string_traverses_the_request_twice() -> None:
    # string(dyn) may be bytes_to_string (a traversal), then isQuantity traverses again.
    quantity = {"x-kubernetes-int-or-string": True}

    assert cost_of("isQuantity(string(self))", quantity) == 2 * 314573 + 1


def test_quantity_with_max_length_is_cheap() -> None:
    quantity = {"x-kubernetes-int-or-string": True, "maxLength": 64}

    assert cost_of("isQuantity(string(self))", quantity) == 2 * 26 + 1


def test_regex_costs_text_times_pattern() -> None:
    # ceil((400 + 1) * 0.1) = 41 for the text, ceil(8 * 0.25) = 2 for the pattern.
    assert cost_of("self.matches('^[a-z]+$')", STRING_100) == 41 * 2 + 1


# Cardinality: how often a rule runs in one object ---------------------------------------


def nested_lists(outer_max: int | None) -> dict[str, Any]:
    inner = {
        "type": "array",
        "maxItems": 8,
        "items": with_rule(STRING_100, "self == oldSelf"),
    }
    outer: dict[str, Any] = {"type": "array", "items": inner}
    if outer_max is not None:
        outer["maxItems"] = outer_max
    return {"type": "object", "properties": {"outer": outer}}


def test_rule_in_items_is_multiplied_by_every_enclosing_max_items() -> None:
    [rule] = schema_cost(nested_lists(4)).rules

    assert (rule.per_call, rule.cardinality, rule.cost) == (42, 4 * 8, 42 * 32)
    assert (
        rule.path
        == "openAPIV3Schema.properties[outer].items.items.x-kubernetes-validations[0].rule"
    )


def test_rule_under_an_unbounded_list_runs_as_often_as_its_value_fits_the_request() -> None:
    [rule] = schema_cost(nested_lists(None)).rules

    # 3 MiB / (2 bytes for "" + 1 comma)
    assert rule.cardinality == 3 * 1024 * 1024 // 3


def test_over_budget_names_each_rule_with_its_cost_and_factor() -> None:
    [rule] = schema_cost(nested_lists(None)).rules

    line = over_budget(schema_cost(nested_lists(None)), share=0.001)[0]
    assert line.startswith(f"{rule.path}: estimated cost {rule.cost} is {rule.factor:.2f}x")
    assert f"per-rule limit {PER_RULE_COST_LIMIT}" in line


def test_total_is_checked_against_the_whole_schema_limit() -> None:
    cost = schema_cost(nested_lists(None))
    share = cost.total / CRD_COST_LIMIT * 0.99

    assert any(
        line.startswith("openAPIV3Schema: estimated total") for line in over_budget(cost, share)
    )


# What cannot be estimated is refused, not guessed ---------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("self.frobnicate()", r"function frobnicate\(\) is not modelled"),
        ("self ==", "does not parse"),
        ("self.missing == 'a'", "undefined field 'missing'"),
    ],
)
def test_rules_outside_the_model_are_refused(rule: str, message: str) -> None:
    with pytest.raises(CelCostError, match=message):
        cost_of(rule, {"type": "object", "properties": {"a": STRING_100}})
