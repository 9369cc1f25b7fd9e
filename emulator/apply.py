"""Field ownership (`metadata.managedFields`) and server-side apply.

Simplified to what clients meet: ownership is tracked per map key path; lists are atomic
(owned as a whole). An Update takes the fields it changes; an Apply owns exactly the fields
of its configuration, conflicts with other owners of a field whose value it would change
(unless forced), shares fields set to the same value, and removes fields it dropped that
nobody else owns.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from emulator.clock import now_time
from emulator.errors import error
from emulator.jsontree import clone
from emulator.patch import merge_patch

Obj = dict[str, Any]
Path = tuple[str, ...]

_SKIP_TOP = ("apiVersion", "kind", "status")
_META_OWNED = ("labels", "annotations", "finalizers", "ownerReferences")


def _owned_parts(obj: Obj, include_status: bool) -> dict[Path, Any]:
    """The top of an object that fields are owned under: each top-level field but
    apiVersion and kind (and status, unless included), and of metadata only the owned
    maps and lists (labels, annotations, finalizers, ownerReferences), by path."""
    parts: dict[Path, Any] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status" and not include_status):
            continue
        if key == "metadata":
            for meta_key in _META_OWNED:
                if meta_key in value:
                    parts[("metadata", meta_key)] = value[meta_key]
            continue
        parts[(key,)] = value
    return parts


def leaves(obj: Obj, *, include_status: bool = False) -> dict[Path, Any]:
    """Owned paths -> values: map keys recursively, lists and scalars (and {}) as leaves."""
    result: dict[Path, Any] = {}

    def walk(value: Any, path: Path) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, (*path, key))
        else:
            result[path] = value

    for path, value in _owned_parts(obj, include_status).items():
        walk(value, path)
    return result


def to_fields_v1(paths: list[Path]) -> Obj:
    root: Obj = {}
    for path in paths:
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return root


def fields_of(obj: Obj, *, include_status: bool = False) -> Obj:
    """`to_fields_v1(sorted(leaves(obj)))`, built in one walk of the object (keys sorted
    at every level, which is the order sorting the paths gives)."""

    def walk(value: Any) -> Obj:
        if isinstance(value, dict) and value:
            return {f"f:{key}": walk(value[key]) for key in sorted(value)}
        return {}

    root: Obj = {}
    for path, value in sorted(_owned_parts(obj, include_status).items()):
        node = root
        for part in path[:-1]:
            node = node.setdefault(f"f:{part}", {})
        node[f"f:{path[-1]}"] = walk(value)
    return root


def from_fields_v1(fields: Obj) -> set[Path]:
    paths: set[Path] = set()

    def walk(node: Obj, path: Path) -> None:
        if not node and path:
            paths.add(path)
        for key, child in node.items():
            if key.startswith("f:"):
                walk(child, (*path, key[2:]))
            elif key == ".":
                paths.add(path)

    walk(fields, ())
    return paths


def _entry(
    manager: str, operation: str, api_version: str, paths: set[Path], time: str | None = None
) -> Obj:
    entry: Obj = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time or now_time(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(sorted(paths)),
    }
    return entry


def _owned(obj: Obj) -> list[tuple[Obj, set[Path]]]:
    return [
        (e, from_fields_v1(e.get("fieldsV1") or {}))
        for e in obj["metadata"].get("managedFields") or []
    ]


_PARSED: OrderedDict[int, tuple[Obj, frozenset[Path]]] = OrderedDict()
"""The paths of recently read `fieldsV1` trees, by identity: a stored object is never
changed, and an entry a write does not touch is carried into the next version as it
is, so each entry's tree is parsed once, not on every write to its object."""
_PARSED_SIZE = 8192


def _paths_of(fields: Obj) -> frozenset[Path]:
    if not fields:
        return frozenset()
    found = _PARSED.get(id(fields))
    if found is not None and found[0] is fields:
        _PARSED.move_to_end(id(fields))
        return found[1]
    paths = frozenset(from_fields_v1(fields))
    _PARSED[id(fields)] = (fields, paths)  # the reference keeps the id from being reused
    if len(_PARSED) > _PARSED_SIZE:
        _PARSED.popitem(last=False)
    return paths


def _changes(old: Obj | None, new: Obj, include_status: bool) -> tuple[set[Path], set[Path]]:
    """(changed, removed): the owned paths (`leaves`) that `new` sets to a value `old`
    does not have there, and those of `old` that `new` no longer has. The same as
    comparing `leaves(old)` with `leaves(new)`, but equal subtrees are passed over at
    once (compared in C) instead of walked leaf by leaf."""
    changed: set[Path] = set()
    removed: set[Path] = set()

    def into(value: Any, path: Path, out: set[Path]) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                into(item, (*path, key), out)
        else:
            out.add(path)

    def diff(before: Any, after: Any, path: Path) -> None:
        if before is not _ABSENT and before == after:
            return
        if isinstance(after, dict) and after:
            if isinstance(before, dict) and before:
                for key, item in after.items():
                    diff(before.get(key, _ABSENT), item, (*path, key))
                for key, item in before.items():
                    if key not in after:
                        into(item, (*path, key), removed)
                return
            if before is not _ABSENT:
                removed.add(path)  # a leaf here before, a map of leaves now
            into(after, path, changed)
            return
        changed.add(path)
        if isinstance(before, dict) and before:
            into(before, path, removed)

    before = _owned_parts(old, include_status) if old else {}
    after = _owned_parts(new, include_status)
    for path, value in after.items():
        diff(before.get(path, _ABSENT), value, path)
    for path, value in before.items():
        if path not in after:
            into(value, path, removed)
    return changed, removed


def _get(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _ABSENT
        obj = obj[part]
    return obj


_ABSENT = object()


def _covers(owned: set[Path]) -> Callable[[Path], bool]:
    """Whether a path is one of `owned`, inside one, or holds one: a test per path of a
    few set lookups (its prefixes), not a walk over `owned`."""
    prefixes = {p[:i] for p in owned for i in range(len(p) + 1)}

    def covered(path: Path) -> bool:
        return path in prefixes or any(path[:i] in owned for i in range(len(path)))

    return covered


def record_update(
    new: Obj, old: Obj | None, manager: str, api_version: str, subresource: str = ""
) -> None:
    """Give `manager` (operation Update) the fields this write changed; drop removed ones."""
    if old is None:  # a creation: the manager owns every field of the object
        fields = fields_of(new, include_status=bool(subresource))
        if fields:
            entry = _entry(manager, "Update", api_version, set())
            entry["fieldsV1"] = fields
            if subresource:
                entry["subresource"] = subresource
            new["metadata"]["managedFields"] = [entry]
        elif new["metadata"].get("managedFields") is not None:
            new["metadata"]["managedFields"] = []
        return
    changed, removed = _changes(old, new, bool(subresource))
    entries = (
        []
        if old is None
        else [
            (e, _paths_of(e.get("fieldsV1") or {}))
            for e in old["metadata"].get("managedFields") or []
        ]
    )
    kept: list[Obj] = []
    mine_at: int | None = None
    mine: set[Path] = set()
    covered = _covers(changed | removed)
    for entry, paths in entries:
        remaining = {p for p in paths if not covered(p)}
        if (
            entry["manager"] == manager
            and entry["operation"] == "Update"
            and entry.get("subresource", "") == subresource
        ):
            mine, mine_at = remaining | changed, len(kept)
            if mine == paths:
                kept.append(entry)
            elif mine:
                kept.append(_entry(manager, "Update", api_version, mine))
                if subresource:
                    kept[-1]["subresource"] = subresource
            continue
        if remaining != paths:
            entry = {**entry, "fieldsV1": to_fields_v1(sorted(remaining))}
        if remaining:
            kept.append(entry)
    if mine_at is None and changed:
        entry = _entry(manager, "Update", api_version, changed)
        if subresource:
            entry["subresource"] = subresource
        kept.append(entry)
    if kept or new["metadata"].get("managedFields") is not None:
        new["metadata"]["managedFields"] = kept


def apply(live: Obj | None, config: Obj, manager: str, force: bool, api_version: str) -> Obj:
    """The object after `manager` applies `config`; 409 on conflicts unless forced."""
    wanted = leaves(config)
    wanted_paths = set(wanted)
    base: Obj = clone(live) if live is not None else {"metadata": {}}
    entries = _owned(base) if live is not None else []
    conflicts: list[tuple[str, str, Path]] = []
    for entry, paths in entries:
        if entry["manager"] == manager and entry["operation"] == "Apply":
            continue
        for path in sorted(paths & wanted_paths):
            if _get(base, path) != wanted[path]:
                who = f'"{entry["manager"]}"'
                if entry["operation"] == "Update":
                    who += f" using {entry['apiVersion']}"
                conflicts.append((who, entry["manager"], path))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    previous: set[Path] = set()
    result_entries: list[Obj] = []
    taken = {path for _, _, path in conflicts}
    for entry, paths in entries:
        if entry["manager"] == manager and entry["operation"] == "Apply":
            previous = paths
            result_entries.append(entry)
            continue
        remaining = paths - taken
        if remaining != paths:
            entry = {**entry, "fieldsV1": to_fields_v1(sorted(remaining))}
        if remaining:
            result_entries.append(entry)
    others = set().union(
        *(
            from_fields_v1(e["fieldsV1"])
            for e in result_entries
            if not (e["manager"] == manager and e["operation"] == "Apply")
        )
    )
    merged = merge_patch(base, {k: v for k, v in config.items() if k != "metadata"})
    meta_patch = {k: v for k, v in (config.get("metadata") or {}).items() if k in _META_OWNED}
    merged["metadata"] = merge_patch(merged.get("metadata") or {}, meta_patch)
    for path in previous - wanted_paths:
        if path not in others and not any(p[: len(path)] == path for p in wanted_paths):
            _remove(merged, path)
    own = _entry(manager, "Apply", api_version, wanted_paths)
    for i, entry in enumerate(result_entries):
        if entry["manager"] == manager and entry["operation"] == "Apply":
            if from_fields_v1(entry["fieldsV1"]) == wanted_paths:
                own["time"] = entry["time"]
            result_entries[i] = own
            break
    else:
        result_entries.append(own)
    merged["metadata"]["managedFields"] = result_entries
    result: Obj = merged
    return result


def _remove(obj: Obj, path: Path) -> None:
    node: Any = obj
    for part in path[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def _conflict_error(conflicts: list[tuple[str, str, Path]]) -> Exception:
    def dotted(path: Path) -> str:
        return "".join(f".{p}" for p in path)

    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": dotted(path)}
        for who, _, path in conflicts
    ]
    if len(conflicts) == 1:
        who, _, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {who}: {dotted(path)}"
    else:
        lines = "".join(f"\n- {dotted(path)}" for _, _, path in conflicts)
        count = len(conflicts)
        message = f"Apply failed with {count} conflicts: conflicts with {conflicts[0][0]}:{lines}"
    return error(409, message, "Conflict", {"causes": causes})
