"""Properties of the CEL cost estimate over drawn schemas: bounds only ever help.

The class of defect behind issue 8 section 0 is a rule whose cost the API server sizes
by the request limit because a list, map or string above or under it has no bound.
Drawn: nested lists with or without maxItems, strings with or without maxLength,
int-or-string quantities, and rules that compare, iterate, match and parse.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from controller.api.crdcost import MAX_REQUEST_SIZE_BYTES, schema_cost, unbounded_nodes
from tests.property.harness import property_settings

RULES = [
    "self.all(x, self.exists_one(y, y.name == x.name))",
    "self.exists(x, x.name.matches('^[a-z]+$'))",
    "self.all(x, !has(x.q) || isQuantity(string(x.q)))",
    "size(self) <= 3",
]
ITEM_RULES = [
    "self.name == 'a'",
    "!has(self.q) || isQuantity(string(self.q))",
    "self.name.startsWith('x')",
]

bounds = st.one_of(st.none(), st.integers(min_value=0, max_value=5000))


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    """An object holding a list (maybe inside another list) of items with a name and a quantity."""
    name: dict[str, Any] = {"type": "string"}
    quantity: dict[str, Any] = {"x-kubernetes-int-or-string": True}
    for node in (name, quantity):
        if (length := draw(bounds)) is not None:
            node["maxLength"] = length
    item_rules = draw(st.lists(st.sampled_from(ITEM_RULES), max_size=2))
    item = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": name, "q": quantity},
        "x-kubernetes-validations": [{"rule": r, "message": "m"} for r in item_rules],
    }
    items: dict[str, Any] = {"type": "array", "items": item}
    list_rules = draw(st.lists(st.sampled_from(RULES), max_size=2))
    items["x-kubernetes-validations"] = [{"rule": r, "message": "m"} for r in list_rules]
    for _ in range(draw(st.integers(min_value=0, max_value=1))):
        items = {"type": "array", "items": items}
    node = items
    while node.get("type") == "array":
        if (count := draw(bounds)) is not None:
            node["maxItems"] = count
        node = node["items"]
    return {"type": "object", "properties": {"list": items}}


def bounded_nodes(schema: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    found = [(schema, key) for key in ("maxItems", "maxLength") if key in schema]
    for sub in [*schema.get("properties", {}).values(), schema.get("items")]:
        if isinstance(sub, dict):
            found += bounded_nodes(sub)
    return found


@property_settings(150)
@given(schemas(), st.data())
def test_raising_a_bound_never_lowers_any_rule_cost(
    schema: dict[str, Any], data: st.DataObject
) -> None:
    before = [r.cost for r in schema_cost(schema).rules]
    nodes = bounded_nodes(schema)
    if nodes:
        node, key = data.draw(st.sampled_from(nodes))
        node[key] += data.draw(st.integers(min_value=1, max_value=1000))
    after = [r.cost for r in schema_cost(schema).rules]

    assert all(a >= b for a, b in zip(after, before, strict=True))


@property_settings(150)
@given(schemas())
def test_a_missing_bound_costs_what_the_request_size_allows(schema: dict[str, Any]) -> None:
    # Without maxItems a list holds as many of its smallest items as fit in 3 MiB; the
    # estimate must be the same as with that bound written down.
    bounded = schema_cost(schema)
    node = schema["properties"]["list"]
    while node.get("type") == "array" and "maxItems" in node:
        node = node["items"]
    if node.get("type") != "array":
        return
    # The smallest item is {"name":""} (2 + 4 + 2 + 4 bytes), or [] for an inner list.
    smallest_item = 2 + len("name") + 2 + 4 if node["items"].get("type") == "object" else 2
    node["maxItems"] = (MAX_REQUEST_SIZE_BYTES - 2) // (smallest_item + 1)

    assert [r.per_call for r in schema_cost(schema).rules] == [r.per_call for r in bounded.rules]


@property_settings(150)
@given(schemas())
def test_every_unbounded_list_or_string_is_reported(schema: dict[str, Any]) -> None:
    reported = list(unbounded_nodes(schema))
    missing = [n for n in _lists_and_strings(schema) if _bound_key(n) not in n]
    assert len(reported) == len(missing)


def _bound_key(node: dict[str, Any]) -> str:
    return "maxItems" if node.get("type") == "array" else "maxLength"


def _lists_and_strings(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    if schema.get("type") in ("array", "string") or schema.get("x-kubernetes-int-or-string"):
        found.append(schema)
    for sub in [*schema.get("properties", {}).values(), schema.get("items")]:
        if isinstance(sub, dict):
            found += _lists_and_strings(sub)
    return found
