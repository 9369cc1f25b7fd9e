"""Kubernetes `Status` error bodies, raised as `ApiError` and turned into responses by http.py.

The messages follow the real API server's wording, because clients (and our controller)
branch on `reason` and sometimes on the message.
"""

from __future__ import annotations

from typing import Any

from emulator.resources import ResourceType


class ApiError(Exception):
    """An HTTP error whose body is a complete `Status` object."""

    def __init__(
        self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(body.get("message", ""))
        self.code = code
        self.body = body
        self.headers = headers or {}


def status_body(
    code: int,
    message: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    if reason is not None:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def error(
    code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
) -> ApiError:
    return ApiError(code, status_body(code, message, reason, details))


def _details(rt: ResourceType, name: str, kind: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = kind if kind is not None else rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return error(404, f'{rt.qualified_plural} "{name}" not found', "NotFound", _details(rt, name))


def namespace_not_found(name: str) -> ApiError:
    return error(
        404,
        f'namespaces "{name}" not found',
        "NotFound",
        {"name": name, "kind": "namespaces"},
    )


def no_route() -> ApiError:
    return error(404, "the server could not find the requested resource", "NotFound", {})


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return error(
        409, f'{rt.qualified_plural} "{name}" already exists', "AlreadyExists", _details(rt, name)
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    return error(
        409,
        f'Operation cannot be fulfilled on {rt.qualified_plural} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "Conflict",
        _details(rt, name),
    )


def precondition_conflict(rt: ResourceType, name: str, what: str) -> ApiError:
    return error(
        409,
        f'Operation cannot be fulfilled on {rt.kind} "{name}": {what}',
        "Conflict",
        _details(rt, name, rt.kind),
    )


def bad_request(message: str) -> ApiError:
    return error(400, message, "BadRequest")


def internal(message: str) -> ApiError:
    return error(500, message)


def cause(reason: str, message: str, field: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def invalid(
    rt: ResourceType | None,
    name: str,
    causes: list[dict[str, str]],
    *,
    kind: str | None = None,
    group: str | None = None,
) -> ApiError:
    """422 Invalid: the message lists `field: message` of every cause, as the server does."""
    kind = kind if kind is not None else (rt.kind if rt else "")
    group = group if group is not None else (rt.group if rt else "")
    qualified = f"{kind}.{group}" if group else kind
    parts = list(dict.fromkeys(f"{c['field']}: {c['message']}" for c in causes))
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = causes
    return error(422, f'{qualified} "{name}" is invalid: {joined}', "Invalid", details)


def forbidden(
    rt: ResourceType, name: str, why: str, causes: list[dict[str, str]] | None = None
) -> ApiError:
    details = _details(rt, name)
    if causes:
        details["causes"] = causes
    return error(403, f'{rt.qualified_plural} "{name}" is forbidden: {why}', "Forbidden", details)


def decode_error(rt: ResourceType, version: str, what: str) -> ApiError:
    return bad_request(f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: {what}')
