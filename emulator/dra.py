"""resource.k8s.io/v1 validation: DeviceClass CEL, ResourceSlice node fields, claims and
their `/status` (allocation and reservedFor), with the real server's messages.

The server does not check that allocated devices exist, nor that a device is allocated
once: only shapes, names and the allocation/reservedFor ordering rules.
"""

from __future__ import annotations

import json
import re
from typing import Any

from controller.engine.cel import SelectorError, compile_selector
from emulator.errors import cause
from emulator.validation import (
    Causes,
    forbidden_cause,
    go_value,
    immutable,
    invalid_cause,
    metadata,
    required,
)

Obj = dict[str, Any]

_DEVICE_FIELDS = ("driver", "attributes", "capacity", "allowMultipleAllocations")
_SELECT = re.compile(r"\bdevice\.([A-Za-z_][A-Za-z0-9_]*)")
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


def _caret(expression: str, column: int) -> str:
    return f"\n | {expression}\n | {'.' * column}^"


def cel_selector(expression: str, field: str) -> Causes:
    """Compile errors as cel-go words them: syntax errors, undefined fields, non-bool."""
    for match in _SELECT.finditer(expression):
        if match.group(1) not in _DEVICE_FIELDS:
            column = match.start() + len("device")
            detail = (
                f"compilation failed: ERROR: <input>:1:{column + 1}: undefined field "
                f"'{match.group(1)}'" + _caret(expression, column)
            )
            return [invalid_cause(field, expression, detail)]
    try:
        compile_selector(expression, where=field)
    except SelectorError as exc:
        what = exc.what
        if "does not compile" in what:
            text = what.split(": ", 2)[-1] if "Failed to parse" in what else what
            text = text.split(f"'{expression}': ", 1)[-1].replace("\n| ", "\n | ")
            return [invalid_cause(field, expression, f"compilation failed: {text}")]
        return [invalid_cause(field, expression, what)]
    return []


def _selectors(selectors: Any, field: str) -> Causes:
    causes: Causes = []
    for i, selector in enumerate(selectors or []):
        expression = ((selector or {}).get("cel") or {}).get("expression")
        if expression is None:
            causes.append(required(f"{field}[{i}].cel"))
        else:
            causes += cel_selector(expression, f"{field}[{i}].cel.expression")
    return causes


def device_class(obj: Obj) -> Causes:
    return metadata(obj) + _selectors((obj.get("spec") or {}).get("selectors"), "spec.selectors")


def resource_slice(obj: Obj) -> Causes:
    causes = metadata(obj)
    spec = obj.get("spec") or {}
    if not spec.get("driver"):
        causes.append(required("spec.driver"))
    set_fields = [
        f"`{name}`"
        for name in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection")
        if spec.get(name) not in (None, "", False)
    ]
    rule = (
        "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` "
        "is required"
    )
    if len(set_fields) > 1:
        causes.append(
            invalid_cause(
                "spec", "{" + ", ".join(set_fields) + "}", rule + ", but multiple fields are set"
            )
        )
    elif not set_fields:
        causes.append(required("spec", rule))
    return causes


def _request_names(spec: Obj) -> set[str]:
    names: set[str] = set()
    for request in (spec.get("devices") or {}).get("requests") or []:
        name = (request or {}).get("name", "")
        names.add(name)
        for sub in request.get("firstAvailable") or []:
            names.add(f"{name}/{(sub or {}).get('name', '')}")
    return names


_REQUEST_REF = (
    "must be the name of a request in the claim or the name of a request and a subrequest "
    "separated by '/'"
)


def _exact(request: Obj, field: str) -> Causes:
    causes: Causes = []
    if not request.get("deviceClassName"):
        causes.append(required(f"{field}.deviceClassName"))
    mode = request.get("allocationMode")
    if mode == "All" and "count" in request:
        causes.append(
            invalid_cause(
                f"{field}.count",
                request["count"],
                "must not be specified when allocationMode is 'All'",
            )
        )
    elif mode == "ExactCount" and request.get("count", 1) <= 0:
        causes.append(
            invalid_cause(f"{field}.count", request.get("count"), "must be greater than zero")
        )
    return causes + _selectors(request.get("selectors"), f"{field}.selectors")


def claim_spec(spec: Obj, field: str) -> Causes:
    causes: Causes = []
    devices = spec.get("devices") or {}
    for i, request in enumerate(devices.get("requests") or []):
        where = f"{field}.devices.requests[{i}]"
        has_exact, has_first = (
            request.get("exactly") is not None,
            request.get("firstAvailable") is not None,
        )
        if has_exact and has_first:
            causes.append(
                invalid_cause(
                    where,
                    None,
                    "exactly one of `exactly` or `firstAvailable` is required, "
                    "but multiple fields are set",
                )
            )
        elif not has_exact and not has_first:
            causes.append(
                invalid_cause(
                    where, None, "exactly one of `exactly` or `firstAvailable` is required"
                )
            )
        elif has_exact:
            causes += _exact(request["exactly"], f"{where}.exactly")
        else:
            for j, sub in enumerate(request["firstAvailable"]):
                causes += _exact(sub, f"{where}.firstAvailable[{j}]")
    names = _request_names(spec)
    for i, constraint in enumerate(devices.get("constraints") or []):
        where = f"{field}.devices.constraints[{i}]"
        for j, name in enumerate(constraint.get("requests") or []):
            if name not in names:
                causes.append(invalid_cause(f"{where}.requests[{j}]", name, _REQUEST_REF))
        attribute = constraint.get("matchAttribute")
        if attribute is not None and "/" not in attribute:
            causes.append(
                invalid_cause(
                    f"{where}.matchAttribute",
                    attribute,
                    "a fully qualified name must be a domain and a name separated by a slash",
                )
            )
    return causes


def claim(obj: Obj) -> Causes:
    return metadata(obj) + claim_spec(obj.get("spec") or {}, "spec")


def claim_template(obj: Obj) -> Causes:
    return metadata(obj) + claim_spec((obj.get("spec") or {}).get("spec") or {}, "spec.spec")


def claim_update(new: Obj, old: Obj) -> Causes:
    causes = claim(new)
    if new.get("spec") != old.get("spec"):
        causes.append(immutable("spec", _GoDump(CLAIM_SPEC)(new.get("spec"))))
    return causes


def _node_selector(selector: Any, field: str) -> Causes:
    causes: Causes = []
    terms = (selector or {}).get("nodeSelectorTerms")
    if not terms:
        return [required(f"{field}.nodeSelectorTerms", "must have at least one node selector term")]
    for i, term in enumerate(terms):
        for kind in ("matchExpressions", "matchFields"):
            for j, requirement in enumerate((term or {}).get(kind) or []):
                where = f"{field}.nodeSelectorTerms[{i}].{kind}[{j}]"
                if requirement.get("operator") not in _OPERATORS:
                    causes.append(
                        invalid_cause(
                            f"{where}.operator",
                            requirement.get("operator"),
                            "not a valid selector operator",
                        )
                    )
    return causes


RESERVED_FOR_MAX = 256
"""Consumers a claim may be reserved for (ResourceClaimReservedForMaxSize)."""


def _reserved_for(reserved: list[Any]) -> Causes:
    """validateSet of `status.reservedFor`: at most 256 entries, each with resource, name
    and uid, no uid twice."""
    causes: Causes = []
    if len(reserved) > RESERVED_FOR_MAX:
        causes.append(
            cause(
                "FieldValueTooMany",
                f"Too many: {len(reserved)}: must have at most {RESERVED_FOR_MAX} items",
                "status.reservedFor",
            )
        )
    seen: set[str] = set()
    for i, entry in enumerate(reserved):
        where = f"status.reservedFor[{i}]"
        entry = entry if isinstance(entry, dict) else {}
        causes += [
            required(f"{where}.{key}") for key in ("resource", "name", "uid") if not entry.get(key)
        ]
        uid = entry.get("uid")
        if uid and uid in seen:
            causes.append(cause("FieldValueDuplicate", f"Duplicate value: {go_value(uid)}", where))
        if uid:
            seen.add(uid)
    return causes


def claim_status(new: Obj, old: Obj) -> Causes:
    status = new.get("status") or {}
    old_status = old.get("status") or {}
    causes: Causes = _reserved_for(status.get("reservedFor") or [])
    allocation = status.get("allocation")
    if allocation is not None:
        names = _request_names(new.get("spec") or {})
        for i, result in enumerate((allocation.get("devices") or {}).get("results") or []):
            where = f"status.allocation.devices.results[{i}]"
            if result.get("request") not in names:
                causes.append(
                    invalid_cause(f"{where}.request", result.get("request"), _REQUEST_REF)
                )
            for name in ("driver", "pool", "device"):
                if not result.get(name):
                    causes.append(required(f"{where}.{name}"))
        if allocation.get("nodeSelector") is not None:
            causes += _node_selector(allocation["nodeSelector"], "status.allocation.nodeSelector")
        previous = old_status.get("allocation")
        if previous is not None and previous != allocation:
            causes.append(immutable("status.allocation", _GoDump(ALLOCATION)(allocation)))
    if status.get("reservedFor") and allocation is None:
        causes.append(
            forbidden_cause(
                "status.reservedFor", "may not be specified when `allocated` is not set"
            )
        )
    return causes


# --- Go struct dumps (the "field is immutable" messages print the internal type) ----------

Schema = Any
_STR, _INT, _PTR = "str", "int", "ptr"


def _struct(*fields: tuple[str, Schema]) -> tuple[str, tuple[tuple[str, Schema], ...]]:
    return ("struct", fields)


def _ptr(schema: Schema) -> tuple[str, Schema]:
    return ("ptr", schema)


def _list(schema: Schema) -> tuple[str, Schema]:
    return ("list", schema)


_SELECTOR = _struct(("CEL", _ptr(_struct(("Expression", _STR)))))
_EXACT = _struct(
    ("DeviceClassName", _STR),
    ("Selectors", _list(_SELECTOR)),
    ("AllocationMode", _STR),
    ("Count", _INT),
    ("AdminAccess", _PTR),
    ("Tolerations", _list(_PTR)),
    ("Capacity", _PTR),
)
_SUB = _struct(
    ("Name", _STR),
    ("DeviceClassName", _STR),
    ("Selectors", _list(_SELECTOR)),
    ("AllocationMode", _STR),
    ("Count", _INT),
    ("Tolerations", _list(_PTR)),
    ("Capacity", _PTR),
)
_REQUEST = _struct(("Name", _STR), ("Exactly", _ptr(_EXACT)), ("FirstAvailable", _list(_SUB)))
_CONSTRAINT = _struct(
    ("Requests", _list(_STR)), ("MatchAttribute", _PTR), ("DistinctAttribute", _PTR)
)
CLAIM_SPEC = _struct(
    (
        "Devices",
        _struct(
            ("Requests", _list(_REQUEST)),
            ("Constraints", _list(_CONSTRAINT)),
            ("Config", _list(_PTR)),
        ),
    )
)
_REQUIREMENT = _struct(("Key", _STR), ("Operator", _STR), ("Values", _list(_STR)))
_TERM = _struct(("MatchExpressions", _list(_REQUIREMENT)), ("MatchFields", _list(_REQUIREMENT)))
_RESULT = _struct(
    ("Request", _STR),
    ("Driver", _STR),
    ("Pool", _STR),
    ("Device", _STR),
    ("AdminAccess", _PTR),
    ("Tolerations", _list(_PTR)),
    ("BindingConditions", _list(_STR)),
    ("BindingFailureConditions", _list(_STR)),
    ("ShareID", _PTR),
    ("ConsumedCapacity", _PTR),
)
ALLOCATION = _struct(
    ("Devices", _struct(("Results", _list(_RESULT)), ("Config", _list(_PTR)))),
    ("NodeSelector", _ptr(_struct(("NodeSelectorTerms", _list(_TERM))))),
    ("AllocationTimestamp", _PTR),
)


class _GoDump:
    """Renders a JSON value as Go's encoding/json renders the internal struct (a raw JSON text)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def __call__(self, value: Any) -> _Raw:
        return _Raw(json.dumps(_go(self.schema, value), separators=(",", ":")))


class _Raw(str):
    """Printed as is by go_value (not quoted)."""


def _go(schema: Schema, value: Any) -> Any:
    if schema == _STR:
        return value if isinstance(value, str) else ""
    if schema == _INT:
        return value if isinstance(value, int) else 0
    if schema == _PTR:
        return value
    tag, inner = schema
    if tag == "ptr":
        return None if value is None else _go(inner, value)
    if tag == "list":
        return None if value is None else [_go(inner, v) for v in value]
    source = value if isinstance(value, dict) else {}
    return {
        name: _go(
            sub,
            source.get(
                name[0].lower() + name[1:]
                if name not in ("CEL", "ShareID")
                else {"CEL": "cel", "ShareID": "shareID"}[name]
            ),
        )
        for name, sub in inner
    }
