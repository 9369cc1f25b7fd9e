"""The API server's CEL cost budget for a CRD schema, estimated before it is applied.

Mirrors k8s.io/apiextensions-apiserver (read, not copied):
- `pkg/apis/apiextensions/validation`: each rule's estimated cost is multiplied by the
  product of `maxItems` / `maxProperties` of every list and map above it (its
  cardinality); without such bounds, by how many copies of its value fit in a 3 MiB
  request. A rule over `StaticEstimatedCostLimit` (10^7) is refused, and so is a
  schema whose rules add up to more than `StaticEstimatedCRDCostLimit` (10^8).
- `k8s.io/apiserver/pkg/cel/common/schemas.go` (`SchemaDeclType`): the declared type
  each rule sees, with maximum sizes from `maxLength` (times 4 bytes a character),
  `maxItems` and `maxProperties`, or else from the request size.

`controller.api.celcost` estimates one evaluation of one rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from controller.api.celcost import (
    BOOL,
    DOUBLE,
    INT,
    UINT64_MAX,
    DeclType,
    list_of,
    rule_cost,
)

MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024
"""apiserver `celconfig.MaxRequestSizeBytes`: what bounds anything the schema leaves open."""
PER_RULE_COST_LIMIT = 10_000_000
"""apiextensions `StaticEstimatedCostLimit`: one rule times its cardinality."""
CRD_COST_LIMIT = 100_000_000
"""apiextensions `StaticEstimatedCRDCostLimit`: all rules of one schema together."""

_CEL_RESERVED = frozenset(
    {
        *("true", "false", "null", "in", "as", "break", "const", "continue", "else", "for"),
        *("function", "if", "import", "let", "loop", "package", "namespace", "return"),
        *("var", "void", "while"),
    }
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}


def cel_field_name(name: str) -> str | None:
    """A property's name in CEL (apiserver `Escape`), or None if CEL cannot name it."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    if _IDENTIFIER.match(name) and "__" not in name:
        return name
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", name) or name[0].isdigit():
        return None
    return re.sub(r"__|[-./]", lambda m: _ESCAPES[m.group(0)], name)


def _string_type(max_elements: int, min_size: int = 2) -> DeclType:
    return DeclType("string", max_elements=max_elements, min_serialized_size=min_size)


_OPEN_STRING = MAX_REQUEST_SIZE_BYTES - 2


def _with_type_and_object_meta(schema: dict[str, Any]) -> dict[str, Any]:
    """A resource root always exposes apiVersion, kind and metadata.name/generateName."""
    props = schema.get("properties", {})
    meta = props.get("metadata", {}).get("properties", {})
    if (
        props.get("kind", {}).get("type") == "string"
        and props.get("apiVersion", {}).get("type") == "string"
        and meta.get("name", {}).get("type") == "string"
        and meta.get("generateName", {}).get("type") == "string"
    ):
        return schema
    string = {"type": "string"}
    metadata = {"type": "object", "properties": {"name": string, "generateName": string}}
    return {
        **schema,
        "properties": {**props, "kind": string, "apiVersion": string, "metadata": metadata},
    }


def schema_decl_type(schema: dict[str, Any], resource_root: bool = False) -> DeclType | None:
    """The CEL type a rule sees for a structural schema node; None if CEL cannot see it."""
    if schema.get("x-kubernetes-int-or-string"):
        length = schema.get("maxLength")
        return DeclType("dyn", max_elements=4 * length if length is not None else _OPEN_STRING)
    if resource_root:
        schema = _with_type_and_object_meta(schema)
    kind = schema.get("type")
    if kind == "array":
        if "items" not in schema:
            return None
        items = schema_decl_type(schema["items"], _embedded(schema["items"]))
        if items is None:
            return None
        max_items = schema.get("maxItems")
        if max_items is None:
            max_items = (MAX_REQUEST_SIZE_BYTES - 2) // (items.min_serialized_size + 1)
        return list_of(items, max(max_items, 0))
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            values = schema_decl_type(extra, _embedded(extra))
            if values is None:
                return None
            max_props = schema.get("maxProperties")
            if max_props is None:
                max_props = (MAX_REQUEST_SIZE_BYTES - 2) // (values.min_serialized_size + 6)
            return DeclType(
                "map", max_elements=max(max_props, 0), min_serialized_size=2, elem=values
            )
        required = set(schema.get("required", []))
        fields: dict[str, DeclType] = {}
        min_size = 2  # {}
        for name, prop in schema.get("properties", {}).items():
            field = schema_decl_type(prop, _embedded(prop))
            if field is None:
                continue
            cel_name = cel_field_name(name)
            if cel_name is not None:
                fields[cel_name] = field
            if name in required and "default" not in prop:
                min_size += len(name) + field.min_serialized_size + 4
        return DeclType("object", min_serialized_size=min_size, fields=fields)
    if kind == "string":
        return _string_decl_type(schema)
    return {"boolean": BOOL, "number": DOUBLE, "integer": INT}.get(str(kind))


def _string_decl_type(schema: dict[str, Any]) -> DeclType:
    fmt = schema.get("format")
    if fmt == "byte":
        length = schema.get("maxLength")
        return DeclType(
            "bytes",
            max_elements=length if length is not None else _OPEN_STRING,
            min_serialized_size=2,
        )
    if fmt == "duration":
        return DeclType("duration", max_elements=32, min_serialized_size=3)
    if fmt == "date":
        return DeclType("timestamp", max_elements=12, min_serialized_size=12)
    if fmt == "date-time":
        return DeclType("timestamp", max_elements=32, min_serialized_size=21)
    if schema.get("maxLength") is not None:
        return _string_type(4 * max(schema["maxLength"], 0))
    if schema.get("enum"):
        return _string_type(max(len(v) for v in schema["enum"] if isinstance(v, str)))
    return _string_type(_OPEN_STRING)


def _embedded(schema: dict[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-embedded-resource"))


def _cardinality_factor(schema: dict[str, Any]) -> int | None:
    """How many children one value of `schema` can hold; None: unbounded (`extractMaxElements`)."""
    if schema.get("type") == "object" and "additionalProperties" in schema:
        bound = schema.get("maxProperties")
    elif schema.get("type") == "array":
        bound = schema.get("maxItems")
    else:
        return 1
    return None if bound is None else max(bound, 0)


@dataclass(frozen=True)
class RuleCost:
    """One rule's estimate: `per_call` for one evaluation, `cost` with its cardinality."""

    path: str
    rule: str
    per_call: int
    cardinality: int
    cost: int

    @property
    def factor(self) -> float:
        """Share of the per-rule limit; the API server reports this as 'factor of Nx'."""
        return self.cost / PER_RULE_COST_LIMIT


@dataclass(frozen=True)
class SchemaCost:
    rules: tuple[RuleCost, ...]

    @property
    def total(self) -> int:
        return min(sum(r.cost for r in self.rules), UINT64_MAX)

    @property
    def factor(self) -> float:
        """Share of the whole-schema limit."""
        return self.total / CRD_COST_LIMIT


def schema_cost(schema: dict[str, Any], root_path: str = "openAPIV3Schema") -> SchemaCost:
    """Estimate every x-kubernetes-validations rule of a CRD's openAPIV3Schema."""
    return SchemaCost(tuple(_rule_costs(schema, root_path, 1, resource_root=True)))


def _rule_costs(
    schema: dict[str, Any], path: str, cardinality: int | None, resource_root: bool = False
) -> Iterator[RuleCost]:
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        self_type = schema_decl_type(schema, resource_root or _embedded(schema))
        if self_type is None:
            raise ValueError(f"{path}: CEL cannot see this node, yet it has rules")
        times = cardinality
        if times is None:
            times = MAX_REQUEST_SIZE_BYTES // (self_type.min_serialized_size + 1)
        for i, rule in enumerate(rules):
            where = f"{path}.x-kubernetes-validations[{i}].rule"
            try:
                per_call = rule_cost(rule["rule"], self_type)
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from error
            cost = 0 if per_call == 0 else min(per_call * times, UINT64_MAX)
            yield RuleCost(where, rule["rule"], per_call, times, cost)
            if "messageExpression" in rule:  # counted once, whatever the cardinality
                where = f"{path}.x-kubernetes-validations[{i}].messageExpression"
                message_cost = rule_cost(rule["messageExpression"], self_type)
                yield RuleCost(where, rule["messageExpression"], message_cost, 1, message_cost)
    factor = _cardinality_factor(schema)
    below = None if cardinality is None or factor is None else cardinality * factor
    for name, sub in schema.get("properties", {}).items():
        yield from _rule_costs(sub, f"{path}.properties[{name}]", below)
    if isinstance(schema.get("items"), dict):
        yield from _rule_costs(schema["items"], f"{path}.items", below)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _rule_costs(
            schema["additionalProperties"], f"{path}.additionalProperties", below
        )


def over_budget(cost: SchemaCost, share: float = 1.0) -> list[str]:
    """One line per rule above `share` of the per-rule limit, and one if the total is;
    `share` below 1 keeps a margin under what the API server would still accept."""
    problems = [
        f"{r.path}: estimated cost {r.cost} is {r.factor:.2f}x the per-rule limit "
        f"{PER_RULE_COST_LIMIT} ({r.per_call} per call x {r.cardinality}); allowed {share:.2f}x"
        for r in cost.rules
        if r.cost > share * PER_RULE_COST_LIMIT
    ]
    if cost.total > share * CRD_COST_LIMIT:
        problems.append(
            f"openAPIV3Schema: estimated total cost {cost.total} is {cost.factor:.2f}x the "
            f"whole-schema limit {CRD_COST_LIMIT}; allowed {share:.2f}x"
        )
    return problems


def unbounded_nodes(schema: dict[str, Any], path: str = "openAPIV3Schema") -> Iterator[str]:
    """Lists without maxItems, maps without maxProperties and strings without maxLength
    (or an enum, or a fixed-size format); the root's apiVersion and kind are the API
    server's to bound."""
    kind = schema.get("type")
    if kind == "array" and "maxItems" not in schema:
        yield f"{path}: list without maxItems"
    is_map = "additionalProperties" in schema or (
        schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties")
    )
    if kind == "object" and is_map and "maxProperties" not in schema:
        yield f"{path}: map without maxProperties"
    stringy = kind == "string" or schema.get("x-kubernetes-int-or-string")
    fixed_size = schema.get("format") in ("date", "date-time", "duration") or "enum" in schema
    if stringy and "maxLength" not in schema and not fixed_size:
        yield f"{path}: string without maxLength"
    for name, sub in schema.get("properties", {}).items():
        if path == "openAPIV3Schema" and name in ("apiVersion", "kind", "metadata"):
            continue
        yield from unbounded_nodes(sub, f"{path}.properties[{name}]")
    if isinstance(schema.get("items"), dict):
        yield from unbounded_nodes(schema["items"], f"{path}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from unbounded_nodes(schema["additionalProperties"], f"{path}.additionalProperties")
