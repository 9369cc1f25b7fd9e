"""Defaults and validation of Mutating/ValidatingWebhookConfiguration (admissionregistration
.k8s.io/v1), and of Secrets, as the API server applies them.

The rules follow the apiserver's v1 defaults (SetDefaults_ValidatingWebhook and friends)
and `ValidateValidatingWebhookConfiguration`; the messages are those of its field errors.
No recorded transcript covers these kinds (GAPS.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from emulator.validation import (
    DATA_MAX_BYTES,
    Causes,
    forbidden_cause,
    immutable,
    invalid_cause,
    metadata,
    required,
    too_long,
)

Obj = dict[str, Any]
GROUP = "admissionregistration.k8s.io"

_OPERATIONS = ("*", "CREATE", "UPDATE", "DELETE", "CONNECT")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> dict[str, str]:
    listed = ", ".join(f'"{a}"' for a in allowed)
    return {
        "reason": "FieldValueNotSupported",
        "message": f'Unsupported value: "{value}": supported values: {listed}',
        "field": field,
    }


# --- defaults -------------------------------------------------------------------------------
def configuration_defaults(obj: Obj, mutating: bool) -> None:
    for hook in obj.get("webhooks") or []:
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("namespaceSelector", {})
        hook.setdefault("objectSelector", {})
        hook.setdefault("timeoutSeconds", 10)
        if mutating:
            hook.setdefault("reinvocationPolicy", "Never")
        for rule in hook.get("rules") or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")
        service = (hook.get("clientConfig") or {}).get("service")
        if isinstance(service, dict):
            service.setdefault("port", 443)


def secret_defaults(obj: Obj) -> None:
    """`type` defaults to Opaque; `stringData` is written into `data` (base64) and dropped."""
    obj.setdefault("type", "Opaque")
    text = obj.pop("stringData", None) or {}
    if text:
        data = obj.setdefault("data", {})
        for key, value in text.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def secret_data_problem(obj: Obj) -> str | None:
    """A `data` value that is not base64: the decode error the server answers with."""
    for value in (obj.get("data") or {}).values():
        if not isinstance(value, str):
            return "json: cannot unmarshal non-string into Go value of type []uint8"
        for i, char in enumerate(value):
            if char not in _BASE64:
                return f"illegal base64 data at input byte {i}"
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return f"illegal base64 data at input byte {len(value)}"
    return None


def _decoded(value: object) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return str(value).encode()


# --- validation ----------------------------------------------------------------------------
def secret(obj: Obj, old: Obj | None) -> Causes:
    causes = metadata(obj)
    data = obj.get("data") or {}
    for key in data:
        if not _SECRET_KEY.fullmatch(key):
            causes.append(
                invalid_cause(
                    "data",
                    key,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                    "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for "
                    "validation is '[-._a-zA-Z0-9]+')",
                )
            )
    if sum(len(_decoded(value)) for value in data.values()) > DATA_MAX_BYTES:
        causes.append(too_long("data", DATA_MAX_BYTES))
    if obj.get("type") == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                causes.append(required(f"data[{key}]"))
    if old is not None and old.get("type") != obj.get("type"):
        causes.append(immutable("type", obj.get("type")))
    return causes


def configuration(obj: Obj, mutating: bool) -> Causes:
    causes = metadata(obj)
    names: set[str] = set()
    for i, hook in enumerate(obj.get("webhooks") or []):
        at = f"webhooks[{i}]"
        if not isinstance(hook, dict):
            causes.append(invalid_cause(at, hook, "must be an object"))
            continue
        name = hook.get("name") or ""
        if not name:
            causes.append(required(f"{at}.name"))
        elif name.count(".") < 2:
            causes.append(
                invalid_cause(
                    f"{at}.name",
                    name,
                    "should be a domain with at least three segments separated by dots",
                )
            )
        elif name in names:
            causes.append(
                {
                    "reason": "FieldValueDuplicate",
                    "message": f'Duplicate value: "{name}"',
                    "field": f"{at}.name",
                }
            )
        names.add(name)
        causes += _client_config(hook.get("clientConfig"), f"{at}.clientConfig")
        causes += _hook_fields(hook, at, mutating)
    return causes


def _client_config(config: Any, at: str) -> Causes:
    config = config if isinstance(config, dict) else {}
    url, service = config.get("url"), config.get("service")
    if bool(url) == bool(service):
        return [required(at, "exactly one of url or service is required")]
    if url:
        scheme = str(url).partition("://")[0]
        if scheme != "https":
            return [invalid_cause(f"{at}.url", url, "'https' is the only allowed URL scheme")]
        return []
    causes: Causes = []
    for key in ("namespace", "name"):
        if not service.get(key):
            causes.append(required(f"{at}.service.{key}", f"service {key} is required"))
    port = service.get("port", 443)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        causes.append(
            invalid_cause(
                f"{at}.service.port",
                port,
                "port is not valid: must be between 1 and 65535, inclusive",
            )
        )
    path = service.get("path")
    if path is not None and not str(path).startswith("/"):
        causes.append(invalid_cause(f"{at}.service.path", path, "must start with a '/'"))
    return causes


def _hook_fields(hook: Obj, at: str, mutating: bool) -> Causes:
    causes: Causes = []
    side = hook.get("sideEffects")
    if side is None:
        causes.append(required(f"{at}.sideEffects"))
    elif side not in ("None", "NoneOnDryRun"):
        causes.append(_unsupported(f"{at}.sideEffects", side, ("None", "NoneOnDryRun")))
    versions = hook.get("admissionReviewVersions") or []
    if not versions:
        causes.append(required(f"{at}.admissionReviewVersions", "must specify one of v1, v1beta1"))
    elif not {"v1", "v1beta1"} & set(versions):
        causes.append(
            invalid_cause(
                f"{at}.admissionReviewVersions",
                versions,
                "must include at least one of v1, v1beta1",
            )
        )
    timeout = hook.get("timeoutSeconds", 10)
    if not isinstance(timeout, int) or not 1 <= timeout <= 30:
        causes.append(
            invalid_cause(
                f"{at}.timeoutSeconds",
                timeout,
                "the timeout value must be between 1 and 30 seconds",
            )
        )
    policy = hook.get("failurePolicy", "Fail")
    if policy not in ("Fail", "Ignore"):
        causes.append(_unsupported(f"{at}.failurePolicy", policy, ("Fail", "Ignore")))
    if mutating and hook.get("reinvocationPolicy", "Never") not in ("Never", "IfNeeded"):
        causes.append(
            _unsupported(
                f"{at}.reinvocationPolicy", hook.get("reinvocationPolicy"), ("IfNeeded", "Never")
            )
        )
    for j, rule in enumerate(hook.get("rules") or []):
        where = f"{at}.rules[{j}]"
        for op in rule.get("operations") or []:
            if op not in _OPERATIONS:
                causes.append(_unsupported(f"{where}.operations", op, _OPERATIONS))
        if rule.get("scope", "*") not in ("*", "Cluster", "Namespaced"):
            causes.append(
                _unsupported(f"{where}.scope", rule.get("scope"), ("*", "Cluster", "Namespaced"))
            )
        for key in ("apiGroups", "apiVersions", "resources"):
            if not rule.get(key):
                causes.append(required(f"{where}.{key}"))
        if "" in (rule.get("apiVersions") or []):
            causes.append(required(f"{where}.apiVersions", "must not be empty"))
    seen: set[str] = set()
    for j, condition in enumerate(hook.get("matchConditions") or []):
        where = f"{at}.matchConditions[{j}]"
        name = condition.get("name") or ""
        if not name:
            causes.append(required(f"{where}.name"))
        elif name in seen:
            causes.append(forbidden_cause(f"{where}.name", f'duplicate name "{name}"'))
        seen.add(name)
        if not condition.get("expression"):
            causes.append(required(f"{where}.expression"))
    return causes
