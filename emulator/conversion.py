"""Events are stored once and served by two APIs: core v1 and events.k8s.io/v1.

Stored form is core v1. These functions map field names between the two and fill in
the fields each API always shows (nulls and empty strings included), as the real
server's serialisation does.
"""

from __future__ import annotations

from typing import Any

from emulator.jsontree import clone

Obj = dict[str, Any]

# events.k8s.io/v1 field -> core v1 field
_RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
_SHARED = ("reportingInstance", "action", "reason", "type", "eventTime", "series", "related")


def event_to_core(obj: Obj) -> Obj:
    """An events.k8s.io/v1 Event in the stored (core v1) form."""
    core: Obj = {"apiVersion": "v1", "kind": "Event", "metadata": obj.get("metadata", {})}
    for new, old in _RENAMES.items():
        if new in obj:
            core[old] = obj[new]
    for name in _SHARED:
        if name in obj:
            core[name] = obj[name]
    return core


def core_event_out(stored: Obj) -> Obj:
    obj: Obj = {"kind": "Event", "apiVersion": "v1", "metadata": stored["metadata"]}
    obj["involvedObject"] = stored.get("involvedObject", {})
    for name in ("reason", "message"):
        if stored.get(name):
            obj[name] = stored[name]
    obj["source"] = stored.get("source") or {}
    obj["firstTimestamp"] = stored.get("firstTimestamp")
    obj["lastTimestamp"] = stored.get("lastTimestamp")
    if stored.get("count"):
        obj["count"] = stored["count"]
    for name in ("type",):
        if stored.get(name):
            obj[name] = stored[name]
    obj["eventTime"] = stored.get("eventTime")
    for name in ("series", "action", "related"):
        if stored.get(name):
            obj[name] = stored[name]
    obj["reportingComponent"] = stored.get("reportingComponent", "")
    obj["reportingInstance"] = stored.get("reportingInstance", "")
    return obj


def events_event_out(stored: Obj) -> Obj:
    obj: Obj = {"kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": stored["metadata"]}
    obj["eventTime"] = stored.get("eventTime")
    for name in ("series",):
        if stored.get(name):
            obj[name] = stored[name]
    if stored.get("reportingComponent"):
        obj["reportingController"] = stored["reportingComponent"]
    for name in ("reportingInstance", "action", "reason"):
        if stored.get(name):
            obj[name] = stored[name]
    if stored.get("involvedObject"):
        obj["regarding"] = stored["involvedObject"]
    if stored.get("related"):
        obj["related"] = stored["related"]
    if stored.get("message"):
        obj["note"] = stored["message"]
    if stored.get("type"):
        obj["type"] = stored["type"]
    obj["deprecatedSource"] = stored.get("source") or {}
    obj["deprecatedFirstTimestamp"] = stored.get("firstTimestamp")
    obj["deprecatedLastTimestamp"] = stored.get("lastTimestamp")
    if stored.get("count"):
        obj["deprecatedCount"] = stored["count"]
    return obj


def to_storage(group: str, kind: str, obj: Obj) -> Obj:
    if group == "events.k8s.io" and kind == "Event":
        return event_to_core(obj)
    return obj


def from_storage(group: str, kind: str, stored: Obj) -> Obj:
    if kind == "Event" and group in ("", "events.k8s.io"):
        stored = clone(stored)
        return events_event_out(stored) if group else core_event_out(stored)
    return stored
