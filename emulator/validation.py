"""Validation of the built-in types: the rules and messages the real API server gives.

Each function returns `details.causes` entries (reason, message, field); an empty list
means valid. Only what Phalanx and its tests meet is checked; every message here was
seen on a real server (see ../shared/kube-transcripts).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from emulator.errors import cause

Obj = dict[str, Any]
Causes = list[dict[str, str]]

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value', "
    " or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def go_value(value: Any) -> str:
    """A value as Go's field.Invalid prints it: strings quoted, nil as null."""
    if value is None:
        return "null"
    if type(value).__name__ == "_Raw":
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def invalid_cause(field: str, value: Any, detail: str) -> dict[str, str]:
    return cause("FieldValueInvalid", f"Invalid value: {go_value(value)}: {detail}", field)


def required(field: str, detail: str = "") -> dict[str, str]:
    return cause("FieldValueRequired", "Required value" + (f": {detail}" if detail else ""), field)


def forbidden_cause(field: str, detail: str) -> dict[str, str]:
    return cause("FieldValueForbidden", f"Forbidden: {detail}", field)


def immutable(field: str, value: Any) -> dict[str, str]:
    return invalid_cause(field, value, "field is immutable")


# --- metadata ------------------------------------------------------------------------------


def subdomain(value: str, field: str, *, prefix: bool = False) -> Causes:
    """apimachinery's `NameIsDNSSubdomain`: at most 253 characters, lowercase RFC 1123.
    A `prefix` (a generateName) may end in '-' (the random suffix follows it)."""
    checked = value[:-1] + "a" if prefix and value.endswith("-") else value
    return _pattern(value, field, checked, 253, _DNS1123_SUBDOMAIN, SUBDOMAIN_MSG)


def _pattern(
    value: str,
    field: str,
    checked: str,
    limit: int,
    regex: re.Pattern[str],
    message: str,
    part: str = "",
) -> Causes:
    """Go's length check, then its pattern check, of (a `part` of) a name: a cause each."""
    causes: Causes = []
    if len(checked) > limit:
        causes.append(invalid_cause(field, value, f"{part}must be no more than {limit} characters"))
    if not regex.fullmatch(checked):
        causes.append(invalid_cause(field, value, message))
    return causes


def object_name(meta: Obj) -> Causes:
    """`ValidateObjectMeta`'s name rules on create: generateName (as a prefix), then
    name, required unless generated."""
    causes: Causes = []
    generate = meta.get("generateName") or ""
    if generate:
        causes += subdomain(generate, "metadata.generateName", prefix=True)
    name = meta.get("name") or ""
    if not name:
        causes.append(required("metadata.name", "name or generateName is required"))
    else:
        causes += subdomain(name, "metadata.name")
    return causes


def metadata(obj: Obj) -> Causes:
    causes: Causes = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if name:
        causes += subdomain(name, "metadata.name")
    for value in (meta.get("labels") or {}).values():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            causes.append(invalid_cause("metadata.labels", value, LABEL_VALUE_MSG))
    return causes


DATA_MAX_BYTES = 1024 * 1024
"""`core.MaxSecretSize`: what the values of a ConfigMap's `data` and `binaryData` (or a
Secret's `data`, decoded) may hold together."""


def too_long(field: str, limit: int) -> dict[str, str]:
    """field.TooLong's cause (the value is not printed)."""
    return cause("FieldValueTooLong", f"Too long: must have at most {limit} bytes", field)


def config_map(obj: Obj) -> Causes:
    """`ValidateConfigMap`'s size rule: the values (not the keys) of `data` and the
    decoded `binaryData` at most 1 MiB together, reported on the path `[]` (Go's
    `field.NewPath("")`)."""
    total = sum(len(str(v).encode()) for v in (obj.get("data") or {}).values())
    for value in (obj.get("binaryData") or {}).values():
        try:
            total += len(base64.b64decode(str(value), validate=True))
        except (binascii.Error, ValueError):
            total += len(str(value))
    return [too_long("[]", DATA_MAX_BYTES)] if total > DATA_MAX_BYTES else []


def finalizers_update(new: Obj, old: Obj, repeat: int = 2) -> Causes:
    """No finalizer may be added once deletion started (pods report the cause twice)."""
    if not old["metadata"].get("deletionTimestamp"):
        return []
    before = set(old["metadata"].get("finalizers") or [])
    added = [f for f in new["metadata"].get("finalizers") or [] if f not in before]
    if not added:
        return []
    listed = ", ".join(json.dumps(f) for f in added)
    detail = (
        "no new finalizers can be added if the object is being deleted, "
        f"found new finalizers []string{{{listed}}}"
    )
    return [forbidden_cause("metadata.finalizers", detail)] * repeat


def qualified_name(value: str, field: str) -> Causes:
    causes: Causes = []
    name = value
    if "/" in value:
        prefix, name = value.split("/", 1)
        if not prefix or not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            causes.append(invalid_cause(field, value, "prefix part " + SUBDOMAIN_MSG))
    if not name:
        causes.append(invalid_cause(field, value, "name part must be non-empty"))
    return causes + _pattern(value, field, name, 63, _NAME_PART, NAME_PART_MSG, "name part ")


# --- pods ---------------------------------------------------------------------------------


def pod(obj: Obj) -> Causes:
    causes = metadata(obj)
    spec = obj.get("spec") or {}
    if not spec.get("containers"):
        causes.append(required("spec.containers"))
    group = spec.get("schedulingGroup")
    if isinstance(group, dict) and not group.get("podGroupName"):
        causes.append(
            invalid_cause(
                "spec.schedulingGroup.podGroupName", None, "must specify one of: `podGroupName`"
            )
        )
    return causes


_POD_MUTABLE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "
    "to 1 if it was previously negative)"
)


def pod_update(new: Obj, old: Obj) -> Causes:
    """Only images, activeDeadlineSeconds, added tolerations and removed gates may change.

    The real message ends with a diff of Go's internal PodSpec; the emulator leaves it out.
    """
    causes = metadata(new) + finalizers_update(new, old)
    a, b = dict(old.get("spec") or {}), dict(new.get("spec") or {})
    for spec in (a, b):
        for field in ("containers", "initContainers"):
            spec[field] = [
                {k: v for k, v in c.items() if k != "image"} for c in spec.get(field) or []
            ]
        spec.pop("activeDeadlineSeconds", None)
        spec.pop("terminationGracePeriodSeconds", None)
    old_tolerations = a.pop("tolerations", None) or []
    new_tolerations = b.pop("tolerations", None) or []
    old_gates = a.pop("schedulingGates", None) or []
    new_gates = b.pop("schedulingGates", None) or []
    tolerations_ok = all(t in new_tolerations for t in old_tolerations)
    gates_ok = all(g in old_gates for g in new_gates)
    if a != b or not tolerations_ok:
        causes.append(forbidden_cause("spec", _POD_MUTABLE))
    if not gates_ok:
        causes.append(
            forbidden_cause(
                "spec.schedulingGates", "only deletion is allowed, but found new scheduling gate"
            )
        )
    return causes


# --- events -------------------------------------------------------------------------------


def event(obj: Obj, namespace: str, strict: bool) -> Causes:
    """Core v1 rules; `strict` adds the events.k8s.io/v1 ones (stored form is core v1)."""
    causes: Causes = []
    involved_ns = (obj.get("involvedObject") or {}).get("namespace", "")
    controller_field = "reportingController" if strict else "reportingComponent"
    if not obj.get("eventTime"):
        if involved_ns:
            if namespace != involved_ns:
                causes.append(
                    invalid_cause(
                        "involvedObject.namespace", involved_ns, "does not match event.namespace"
                    )
                )
        elif namespace not in ("", "default"):
            causes.append(
                invalid_cause(
                    "involvedObject.namespace", involved_ns, "does not match event.namespace"
                )
            )
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            causes.append(
                invalid_cause(
                    "involvedObject.namespace", involved_ns, "does not match event.namespace"
                )
            )
        controller = obj.get("reportingComponent", "")
        if not controller:
            causes.append(required(controller_field))
        causes.extend(qualified_name(controller, controller_field))
        for field in ("reportingInstance", "action", "reason"):
            if not obj.get(field):
                causes.append(required(field))
    if not strict:
        return causes
    if not obj.get("eventTime"):
        causes.append(required("eventTime"))
    kind = obj.get("type", "")
    if kind not in ("Normal", "Warning"):
        causes.append(invalid_cause("type", "", f"has invalid value: {kind}"))
    for field, value in (
        ("firstTimestamp", obj.get("firstTimestamp")),
        ("lastTimestamp", obj.get("lastTimestamp")),
        ("count", obj.get("count")),
    ):
        if value:
            causes.append(invalid_cause(field, "", "needs to be unset"))
    source = obj.get("source") or {}
    if source.get("component") or source.get("host"):
        causes.append(invalid_cause("source", "", "needs to be unset"))
    return causes


# --- leases, pod groups -------------------------------------------------------------------


def lease(obj: Obj) -> Causes:
    causes = metadata(obj)
    spec = obj.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        causes.append(
            invalid_cause("spec.leaseDurationSeconds", duration, "must be greater than 0")
        )
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        causes.append(
            invalid_cause(
                "spec.leaseTransitions", transitions, "must be greater than or equal to 0"
            )
        )
    return causes


def _scheduling_policy(policy: Any, field: str) -> Causes:
    if not isinstance(policy, dict) or not policy:
        return [invalid_cause(field, "", "must specify one of: `basic`, `gang`")]
    present = sorted(k for k in ("basic", "gang") if k in policy)
    if len(present) > 1:
        return [
            invalid_cause(
                field,
                "{" + ", ".join(present) + "}",
                "must specify exactly one of: `basic`, `gang`",
            )
        ]
    if "gang" in policy:
        gang = policy["gang"] or {}
        if not gang.get("minCount"):
            return [required(f"{field}.gang.minCount")]
        if gang["minCount"] < 0:
            return [
                invalid_cause(
                    f"{field}.gang.minCount", gang["minCount"], "must be greater than or equal to 0"
                )
            ]
    if not present:
        return [invalid_cause(field, "", "must specify one of: `basic`, `gang`")]
    return []


def pod_group(obj: Obj) -> Causes:
    spec = obj.get("spec") or {}
    return metadata(obj) + _scheduling_policy(spec.get("schedulingPolicy"), "spec.schedulingPolicy")


def pod_group_update(new: Obj, old: Obj) -> Causes:
    causes = pod_group(new) + finalizers_update(new, old, repeat=1)
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if new_spec.get("schedulingPolicy") != old_spec.get("schedulingPolicy"):
        causes.append(immutable("spec.schedulingPolicy", None))
    if new_spec.get("podGroupTemplateRef") != old_spec.get("podGroupTemplateRef"):
        causes.append(immutable("spec.podGroupTemplateRef", None))
    return causes


def workload(obj: Obj) -> Causes:
    causes = metadata(obj)
    for i, template in enumerate((obj.get("spec") or {}).get("podGroupTemplates") or []):
        causes += _scheduling_policy(
            (template or {}).get("schedulingPolicy"),
            f"spec.podGroupTemplates[{i}].schedulingPolicy",
        )
    return causes
