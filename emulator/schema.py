"""Custom resources: a CRD's structural schema applied as the API server applies it.

Order, as in the server: prune unknown fields (a warning each, or 400 under
fieldValidation=Strict), apply defaults, validate types, bounds, enums and set lists,
then the CEL `x-kubernetes-validations` rules (only when the schema checks passed).
CEL runs on the project's CEL runtime; `'...'.format([...])` message expressions are
formatted here because the runtime lacks `format`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import cel

from emulator.errors import cause
from emulator.jsontree import clone
from emulator.resources import ResourceType
from emulator.validation import Causes, go_value

Obj = dict[str, Any]
Schema = dict[str, Any]

_TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
}


def resource_type(crd: Obj, version: Obj) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    return ResourceType(
        spec["group"],
        version["name"],
        names["kind"],
        names["plural"],
        spec.get("scope", "Namespaced") == "Namespaced",
        names.get("singular", ""),
        tuple(names.get("shortNames") or ()),
        tuple((version.get("subresources") or {}).keys()),
        has_generation=True,
        custom=True,
    )


def version_schema(crd: Obj, version: str) -> Schema:
    for entry in crd["spec"].get("versions", []):
        if entry["name"] == version:
            return (entry.get("schema") or {}).get("openAPIV3Schema") or {}
    return {}


def printer_columns(crd: Obj, version: str) -> list[Obj]:
    for entry in crd["spec"].get("versions", []):
        if entry["name"] == version:
            return list(entry.get("additionalPrinterColumns") or [])
    return []


def _value_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return _TYPE_NAMES.get(type(value), "null")


# --- pruning and defaults --------------------------------------------------------------------


def prune(value: Any, schema: Schema, path: str, unknown: list[str]) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                result[key] = prune(item, properties[key], child, unknown)
            elif isinstance(additional, dict):
                result[key] = prune(item, additional, child, unknown)
            elif properties is None and additional in (None, True):
                result[key] = item
            else:
                unknown.append(child)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"], f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


def prune_object(obj: Obj, schema: Schema) -> tuple[Obj, list[str]]:
    """Drop fields the schema does not know; metadata, apiVersion and kind always stay."""
    unknown: list[str] = []
    properties = schema.get("properties") or {}
    result: Obj = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata"):
            result[key] = value
        elif key in properties:
            result[key] = prune(value, properties[key], key, unknown)
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            unknown.append(key)
        else:
            result[key] = value
    return result, sorted(unknown)


def default(value: Any, schema: Schema) -> Any:
    if isinstance(value, dict):
        for key, child in (schema.get("properties") or {}).items():
            if key not in value and "default" in child:
                value[key] = clone(child["default"])
            if key in value:
                value[key] = default(value[key], child)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [default(v, schema["items"]) for v in value]
    return value


def default_object(obj: Obj, schema: Schema, only: str | None = None) -> None:
    """Apply the schema's defaults; `only` limits them to one top-level field (what a
    write keeps of its body: the rest is the stored object's, defaulted already)."""
    for key, child in (schema.get("properties") or {}).items():
        if key in ("metadata", "apiVersion", "kind") or (only is not None and key != only):
            continue
        if key not in obj and "default" in child:
            obj[key] = clone(child["default"])
        if key in obj:
            obj[key] = default(obj[key], child)


# --- validation --------------------------------------------------------------------------------


def _check(value: Any, schema: Schema, path: str, body: str, causes: Causes) -> None:
    expected = schema.get("type")
    actual = _value_type(value)
    if value is None and schema.get("nullable"):
        return
    if expected and not (actual == expected or (expected == "number" and actual == "integer")):
        causes.append(
            cause(
                "FieldValueTypeInvalid",
                f"Invalid value: {json.dumps(actual)}: "
                f"{body} in body must be of type {expected}: {json.dumps(actual)}",
                path,
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(go_value(v) for v in schema["enum"])
        causes.append(
            cause(
                "FieldValueNotSupported",
                f"Unsupported value: {go_value(value)}: supported values: {supported}",
                path,
            )
        )
    if actual in ("integer", "number"):
        if "maximum" in schema and value > schema["maximum"]:
            causes.append(
                cause(
                    "FieldValueInvalid",
                    f"Invalid value: {go_value(value)}: "
                    f"{body} in body should be less than or equal to {schema['maximum']}",
                    path,
                )
            )
        if "minimum" in schema and value < schema["minimum"]:
            causes.append(
                cause(
                    "FieldValueInvalid",
                    f"Invalid value: {go_value(value)}: "
                    f"{body} in body should be greater than or equal to {schema['minimum']}",
                    path,
                )
            )
    if actual == "string" and "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(
            cause(
                "FieldValueTooLong",
                f"Too long: may not be more than {schema['maxLength']} bytes",
                path,
            )
        )
    if actual == "array":
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(
                cause(
                    "FieldValueTooMany",
                    f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                    path,
                )
            )
        if schema.get("x-kubernetes-list-type") == "set":
            seen: list[Any] = []
            for i, item in enumerate(value):
                if item in seen:
                    causes.append(
                        cause(
                            "FieldValueDuplicate",
                            f"Duplicate value: {go_value(item)}",
                            f"{path}[{i}]",
                        )
                    )
                seen.append(item)
        for i, item in enumerate(value):
            if isinstance(schema.get("items"), dict):
                _check(item, schema["items"], f"{path}[{i}]", f"{body}[{i}]", causes)
    if actual == "object":
        for key in schema.get("required") or []:
            if key not in value:
                causes.append(cause("FieldValueRequired", "Required value", f"{path}.{key}"))
        for key, child in (schema.get("properties") or {}).items():
            if key in value:
                _check(value[key], child, f"{path}.{key}", f"{body}.{key}" if body else key, causes)


def _has_rules(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("x-kubernetes-validations"):
        return True
    return any(_has_rules(v) for v in (schema.get("properties") or {}).values()) or _has_rules(
        schema.get("items")
    )


_FORMAT = re.compile(r"^\s*'((?:[^'\\]|\\.)*)'\.format\(\s*(\[.*\])\s*\)\s*$", re.S)


def _message(expression: str, context: dict[str, Any]) -> str:
    match = _FORMAT.match(expression)
    if match:
        args = _evaluate(match.group(2), context)
        text = match.group(1)
        for arg in args:
            text = re.sub(r"%[dsf]", lambda m, a=arg: str(a), text, count=1)
        return text
    return str(_evaluate(expression, context))


_PROGRAMS: dict[str, cel.Program] = {}


def _evaluate(expression: str, context: dict[str, Any]) -> Any:
    """`cel.evaluate`, compiling each expression once (a CRD's rules run on every write)."""
    program = _PROGRAMS.get(expression)
    if program is None:
        program = _PROGRAMS[expression] = cel.compile(expression)
    return program.execute(context)


def _rules(value: Any, old: Any, schema: Schema, path: str, causes: Causes) -> None:
    for rule in schema.get("x-kubernetes-validations") or []:
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        context: dict[str, Any] = {"self": value}
        if transition:
            context["oldSelf"] = old
        try:
            ok = _evaluate(rule["rule"], context)
        except Exception as exc:  # an evaluation error fails the rule, as in the server
            causes.append(
                cause("FieldValueInvalid", f"Invalid value: {go_value(value)}: {exc}", path)
            )
            continue
        if ok is True:
            continue
        if rule.get("messageExpression"):
            message = _message(rule["messageExpression"], context)
        else:
            message = rule.get("message") or f"failed rule: {rule['rule']}"
        field = path + (rule.get("fieldPath") or "")
        reason = rule.get("reason", "FieldValueInvalid")
        if reason == "FieldValueForbidden":
            causes.append(cause(reason, f"Forbidden: {message}", field))
        elif reason == "FieldValueRequired":
            causes.append(cause(reason, f"Required value: {message}", field))
        elif isinstance(value, dict | list):
            causes.append(cause(reason, f"Invalid value: {message}", field))
        else:
            causes.append(cause(reason, f"Invalid value: {go_value(value)}: {message}", field))
    if isinstance(value, dict):
        for key, child in (schema.get("properties") or {}).items():
            if key in value:
                _rules(
                    value[key],
                    old.get(key) if isinstance(old, dict) else None,
                    child,
                    f"{path}.{key}",
                    causes,
                )


def validate(obj: Obj, old: Obj | None, schema: Schema, only: str | None = None) -> Causes:
    """Schema then CEL; `only` limits validation to one top-level field (status writes)."""
    causes: Causes = []
    properties = schema.get("properties") or {}
    for key, child in properties.items():
        if key in ("metadata", "apiVersion", "kind") or key not in obj:
            continue
        if only is not None and key != only:
            continue
        _check(obj[key], child, key, "" if only else key, causes)
    if causes:
        if _has_rules(schema):
            causes.append(
                cause(
                    "FieldValueInvalid",
                    "Invalid value: null: some validation rules were not checked because the "
                    "object was invalid; correct the existing errors to complete validation",
                    "<nil>",
                )
            )
        return causes
    for key, child in properties.items():
        if key in obj and key not in ("metadata", "apiVersion", "kind"):
            _rules(obj[key], (old or {}).get(key), child, key, causes)
    return causes
