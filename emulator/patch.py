"""The three patch formats: JSON merge patch, JSON patch and strategic merge patch.

Strategic merge uses the merge keys that the built-in types declare for the fields we
serve (containers by name, conditions by type, ...); any other list is replaced, which
is what the server does for lists without a patch strategy.
"""

from __future__ import annotations

from typing import Any

from emulator.errors import ApiError, bad_request, error
from emulator.jsontree import clone

MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
    "addresses": "type",
    "ports": "containerPort",
    "hostAliases": "ip",
}
MERGED_PRIMITIVE_LISTS = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces. The
    target is not changed: the maps the patch goes into are copied (one level each) and
    what it sets is copied; what it does not touch is shared with the target, so a
    caller that changes the result copies it first (as `Api._decode` does)."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    if patch.get("$patch") == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in MERGED_PRIMITIVE_LISTS:
            merged = list(result.get(key) or [])
            merged.extend(v for v in value if v not in merged)
            result[key] = merged
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(result.get(key), value)
        else:
            result[key] = clone(value)
    return result


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    merged = clone(current)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            merged.append(clone(item))
            continue
        at = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, dict) and old.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if at is not None:
                del merged[at]
        elif at is None:
            merged.append({k: v for k, v in clone(item).items() if k != "$patch"})
        else:
            merged[at] = strategic_merge_patch(merged[at], item)
    return merged


_REJECTED = "the server rejected our request due to an error in our request"


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 as the API server applies it (a `replace` of a missing map key adds it)."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = clone(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise error(422, _REJECTED, "Invalid", {})
        op, path = operation["op"], _pointer(operation["path"])
        if op == "test":
            if _get(doc, path) != operation.get("value"):
                raise error(422, _REJECTED, "Invalid", {})
        elif op in ("add", "replace"):
            doc = _put(doc, path, clone(operation.get("value")), insert=op == "add")
        elif op == "remove":
            doc = _remove(doc, path)
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from", ""))
            value = clone(_get(doc, source))
            if op == "move":
                doc = _remove(doc, source)
            doc = _put(doc, path, value, insert=True)
        else:
            raise error(422, _REJECTED, "Invalid", {})
    return doc


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in text.split("/")[1:]]


_MISSING = object()


def _get(doc: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(doc, dict):
            doc = doc.get(part, _MISSING)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return _MISSING
        if doc is _MISSING:
            return _MISSING
    return doc


def _parent(doc: Any, path: list[str]) -> Any:
    parent = _get(doc, path[:-1])
    if parent is _MISSING or not isinstance(parent, dict | list):
        raise error(422, _REJECTED, "Invalid", {})
    return parent


def _put(doc: Any, path: list[str], value: Any, *, insert: bool) -> Any:
    if not path:
        return value
    parent, last = _parent(doc, path), path[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif last == "-":
        parent.append(value)
    elif last.isdigit() and int(last) <= len(parent):
        if insert:
            parent.insert(int(last), value)
        elif int(last) < len(parent):
            parent[int(last)] = value
        else:
            raise error(422, _REJECTED, "Invalid", {})
    else:
        raise error(422, _REJECTED, "Invalid", {})
    return doc


def _remove(doc: Any, path: list[str]) -> Any:
    parent, last = _parent(doc, path), path[-1]
    try:
        if isinstance(parent, dict):
            del parent[last]
        else:
            del parent[int(last)]
    except (KeyError, ValueError, IndexError) as exc:
        raise error(422, _REJECTED, "Invalid", {}) from exc
    return doc


__all__ = ["ApiError", "json_patch", "merge_patch", "strategic_merge_patch"]
