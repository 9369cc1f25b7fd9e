"""AdmissionReview v1 in and out, and refusals as Kubernetes field errors.

`parse` reads what the API server POSTs (anything else is a `ReviewError`, answered 400);
the rule modules return a `Verdict`; `response` wraps it as the AdmissionReview the API
server expects (uid echoed, JSONPatch base64-encoded).

A refusal lists `FieldError`s printed as apimachinery's field errors print
(`spec.queueName: Not found: "team-b"`, `spec.nodeName: Forbidden: ...`), several joined
as `[a, b]` like an aggregate; the API server puts that after `admission webhook "<name>"
denied the request: `. Content problems answer 422 Invalid with the errors as
`details.causes`; policy refusals (another tenant's queue, a bypass) answer 403 Forbidden.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from controller.api.errors import PathPart, format_path, problems

Obj = dict[str, Any]
API_VERSION = "admission.k8s.io/v1"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class ReviewError(ValueError):
    """A body that is not an AdmissionReview v1 request."""


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of an AdmissionRequest the rules read."""

    uid: str
    operation: str
    group: str
    version: str
    kind: str
    resource: str
    sub_resource: str
    name: str
    namespace: str
    object: Obj | None
    old_object: Obj | None
    username: str = ""


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"{where} must be a string")
    return value


def _object(value: Any, where: str) -> Obj | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReviewError(f"{where} must be an object")
    return value


def parse(body: Any) -> Request:
    """The request of an AdmissionReview v1, or a ReviewError saying what is wrong."""
    if not isinstance(body, dict):
        raise ReviewError("expected a JSON object")
    if body.get("apiVersion") != API_VERSION or body.get("kind") != "AdmissionReview":
        raise ReviewError(
            f"expected apiVersion {API_VERSION} and kind AdmissionReview, got "
            f"{body.get('apiVersion')!r} and {body.get('kind')!r}"
        )
    request = body.get("request")
    if not isinstance(request, dict):
        raise ReviewError("request is missing")
    uid = _text(request.get("uid"), "request.uid")
    if not uid:
        raise ReviewError("request.uid is missing")
    operation = _text(request.get("operation"), "request.operation")
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation must be one of {', '.join(OPERATIONS)}")
    kind = _object(request.get("kind"), "request.kind") or {}
    resource = _object(request.get("resource"), "request.resource") or {}
    user = _object(request.get("userInfo"), "request.userInfo") or {}
    return Request(
        uid=uid,
        operation=operation,
        group=_text(kind.get("group"), "request.kind.group"),
        version=_text(kind.get("version"), "request.kind.version"),
        kind=_text(kind.get("kind"), "request.kind.kind"),
        resource=_text(resource.get("resource"), "request.resource.resource"),
        sub_resource=_text(request.get("subResource"), "request.subResource"),
        name=_text(request.get("name"), "request.name"),
        namespace=_text(request.get("namespace"), "request.namespace"),
        object=_object(request.get("object"), "request.object"),
        old_object=_object(request.get("oldObject"), "request.oldObject"),
        username=_text(user.get("username"), "request.userInfo.username"),
    )


# ---- field errors -------------------------------------------------------------------------
INVALID = "Invalid value"
NOT_FOUND = "Not found"
REQUIRED = "Required value"
FORBIDDEN = "Forbidden"
TOO_MANY = "Too many"
_REASONS = {
    INVALID: "FieldValueInvalid",
    NOT_FOUND: "FieldValueNotFound",
    REQUIRED: "FieldValueRequired",
    FORBIDDEN: "FieldValueForbidden",
    TOO_MANY: "FieldValueTooMany",
}
_OMIT = object()


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem at one field, in apimachinery's `field.Error` form."""

    path: tuple[PathPart, ...]
    type: str
    detail: str = ""
    value: Any = _OMIT

    @property
    def field(self) -> str:
        return format_path(self.path)

    def body(self) -> str:
        """`Invalid value: "x": detail` (the part after the field)."""
        text = self.type
        if self.type in (INVALID, NOT_FOUND) and self.value is not _OMIT:
            text += f": {_go_value(self.value)}"
        if self.type == TOO_MANY and self.value is not _OMIT:
            text += f": {self.value}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}" if self.path else self.body()

    def cause(self) -> Obj:
        return {"reason": _REASONS[self.type], "message": self.body(), "field": self.field}


def _go_value(value: Any) -> str:
    """As field errors print a value: strings quoted, numbers and booleans bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(str(value), ensure_ascii=False)


def invalid(path: tuple[PathPart, ...], value: Any, detail: str) -> FieldError:
    return FieldError(path, INVALID, detail, value)


def invalid_at(path: tuple[PathPart, ...], detail: str) -> FieldError:
    """An invalid value too large to repeat (a whole pod set, say)."""
    return FieldError(path, INVALID, detail)


def not_found(path: tuple[PathPart, ...], value: Any, detail: str = "") -> FieldError:
    return FieldError(path, NOT_FOUND, detail, value)


def required(path: tuple[PathPart, ...], detail: str = "") -> FieldError:
    return FieldError(path, REQUIRED, detail)


def forbidden(path: tuple[PathPart, ...], detail: str) -> FieldError:
    return FieldError(path, FORBIDDEN, detail)


def too_many(path: tuple[PathPart, ...], count: int, detail: str) -> FieldError:
    return FieldError(path, TOO_MANY, detail, count)


def schema_errors(read: Callable[[Obj], object], obj: Obj) -> list[FieldError]:
    """Why `read` (a model's `from_manifest`) refuses `obj`: the schema's rules, each at its
    field path; empty if it reads."""
    try:
        read(obj)
    except ValidationError as err:
        return [invalid_at(path, problem) for path, problem in problems(err)]
    return []


def settled_update(request: Request, ignore: tuple[str, ...] = ()) -> bool:
    """Whether `request` is an UPDATE with nothing to judge: of an object being deleted,
    or leaving its spec (but for the `ignore`d fields) as it was (metadata and status
    writes, the controller's own included)."""
    new, old = request.object, request.old_object
    if request.operation != "UPDATE" or new is None or old is None:
        return False
    if (new.get("metadata") or {}).get("deletionTimestamp"):
        return True

    def spec(obj: Obj) -> Obj:
        return {k: v for k, v in (obj.get("spec") or {}).items() if k not in ignore}

    return spec(new) == spec(old)


def aggregate(errors: list[FieldError]) -> str:
    """One error as itself, several as `[a, b]` (apimachinery's aggregate), duplicates once."""
    parts = list(dict.fromkeys(str(e) for e in errors))
    return parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"


# ---- verdicts -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    code: int = 200
    reason: str = ""
    errors: tuple[FieldError, ...] = ()
    message: str = ""
    patch: tuple[Obj, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        """The refusal as the user reads it."""
        return self.message or aggregate(list(self.errors))


def allow(patch: list[Obj] | None = None, warnings: list[str] | None = None) -> Verdict:
    return Verdict(True, patch=tuple(patch or ()), warnings=tuple(warnings or ()))


def refuse(errors: list[FieldError], warnings: list[str] | None = None) -> Verdict:
    """403 Forbidden if any error is a policy refusal, else 422 Invalid."""
    policy = any(e.type == FORBIDDEN for e in errors)
    return Verdict(
        False,
        403 if policy else 422,
        "Forbidden" if policy else "Invalid",
        tuple(errors),
        warnings=tuple(warnings or ()),
    )


def unavailable(message: str) -> Verdict:
    """The webhook cannot judge yet (caches not synced); the API server sees a 500 refusal."""
    return Verdict(False, 500, "InternalError", message=message)


def response(request_uid: str, verdict: Verdict, request: Request | None = None) -> Obj:
    """The AdmissionReview answering `request_uid`."""
    answer: Obj = {"uid": request_uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        status: Obj = {
            "status": "Failure",
            "message": verdict.text,
            "reason": verdict.reason,
            "code": verdict.code,
        }
        if verdict.errors and request is not None:
            status["details"] = {
                "name": request.name or "Unknown",
                **({"group": request.group} if request.group else {}),
                "kind": request.resource,
                "causes": [e.cause() for e in verdict.errors],
            }
        answer["status"] = status
    if verdict.patch:
        raw = json.dumps(list(verdict.patch), separators=(",", ":")).encode()
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(raw).decode()
    if verdict.warnings:
        answer["warnings"] = list(verdict.warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": answer}


def pointer(*parts: str) -> str:
    """A JSON pointer (RFC 6901) to a field, e.g. `/metadata/labels/phalanx.dev~1gang`."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)
