"""Dynamic admission: calling the webhooks of Mutating/ValidatingWebhookConfigurations
(admissionregistration.k8s.io/v1) the way the API server does.

For every write (create, update, patch, apply, delete, and the binding subresource) the
server finds the webhooks whose rules match the request (operations, apiGroups,
apiVersions, resources with their `/subresource` forms, scope), whose namespaceSelector
matches the namespace's labels (or a Namespace's own labels; other cluster-scoped objects
are never skipped), whose objectSelector matches the old or the new object's labels, and
whose matchConditions (CEL over `object`, `oldObject`, `request`) all hold. Mutating
webhooks run first, one after another in configuration order (by configuration name,
then webhook order), each seeing the last one's result, and their JSONPatch answers are
applied; then the object is validated as usual; then the validating webhooks run, all at
once, and the first refusal (in configuration order) wins.

Each call is an AdmissionReview v1 POST over TLS: `clientConfig.url`, or a service
reference, which the test resolves through `Admission.services` ((namespace, name, port)
-> (host, port)); the certificate must verify against `caBundle` (the system roots
without one) for the service's `<name>.<namespace>.svc` name or the URL's host. The call
gets `timeoutSeconds` (default 10, sent as `?timeout=10s`). What the client sees:
- a refusal: `<resource> "<name>" is forbidden: admission webhook "<webhook>" denied the
  request: <message>` with the webhook's code (403 if it gave none) and reason
  (Forbidden if none), as apiserver's webhook/errors/statuserror.go builds it;
- a call that failed (refused connection, TLS, timeout, non-200, malformed review): with
  failurePolicy Fail, 500 `Internal error occurred: failed calling webhook "<webhook>":
  failed to call webhook: Post "<url>?timeout=10s": <why>`; with Ignore, the request
  goes on without that webhook.
Webhooks are never called for the webhook configurations themselves (as upstream, so a
broken webhook cannot lock the configuration that would fix it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import cel

from emulator.errors import ApiError, error
from emulator.jsontree import clone
from emulator.patch import json_patch
from emulator.resources import ResourceType
from emulator.selection import Requirement
from emulator.store import Store

Obj = dict[str, Any]
GROUP = "admissionregistration.k8s.io"
VALIDATING = f"validatingwebhookconfigurations.{GROUP}"
MUTATING = f"mutatingwebhookconfigurations.{GROUP}"
REVIEW_VERSION = "admission.k8s.io/v1"
USER = {"username": "system:admin", "groups": ["system:masters", "system:authenticated"]}
"""Who every request comes from: the emulator has one all-powerful token (see GAPS.md)."""
_OPTIONS = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}


@dataclass(frozen=True)
class Attributes:
    """One request as admission sees it."""

    rt: ResourceType
    operation: str
    namespace: str
    name: str
    subresource: str
    obj: Obj | None
    old: Obj | None
    kind: tuple[str, str, str] | None = None
    """(group, version, kind) of `obj` when it is not the resource's own kind (Binding)."""

    @property
    def resource(self) -> str:
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural


class CallFailed(Exception):
    """The webhook could not be called or answered nonsense (failurePolicy decides)."""


class Admission:
    """The webhook dispatcher of one emulator."""

    def __init__(self, store: Store, namespace_labels: Callable[[str], dict[str, str]]) -> None:
        self.store = store
        self.namespace_labels = namespace_labels
        self.services: dict[tuple[str, str, int], tuple[str, int]] = {}
        """Where a service reference goes: (namespace, name, port) -> (host, port)."""
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.calls = 0
        """Webhook calls made (tests check that a skipped webhook was not called)."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- entry points --------------------------------------------------------------------
    async def mutate(self, attrs: Attributes, warnings: list[str]) -> Obj | None:
        """The object after every matching mutating webhook (None for a DELETE)."""
        obj = attrs.obj
        for hook in self._hooks(MUTATING, attrs):
            current = Attributes(
                attrs.rt,
                attrs.operation,
                attrs.namespace,
                attrs.name,
                attrs.subresource,
                obj,
                attrs.old,
                attrs.kind,
            )
            response = await self._call_or_fail(hook, current, warnings)
            if response is None:
                continue
            patch = _patch(hook, response)
            if patch:
                if obj is None:
                    raise error(
                        500,
                        f'Internal error occurred: admission webhook "{hook["name"]}" attempted '
                        "to modify the object, which is not supported for this operation",
                        "InternalError",
                    )
                try:
                    obj = json_patch(obj, patch)
                except ApiError as exc:
                    raise error(500, f"Internal error occurred: {exc}", "InternalError") from exc
        return obj

    async def validate(self, attrs: Attributes, warnings: list[str]) -> None:
        """Call every matching validating webhook at once; the first refusal is raised."""
        hooks = self._hooks(VALIDATING, attrs)
        if not hooks:
            return
        outcomes = await asyncio.gather(
            *(self._call_or_fail(hook, attrs, warnings) for hook in hooks),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    # --- which webhooks -------------------------------------------------------------------
    def _hooks(self, key: str, attrs: Attributes) -> list[Obj]:
        if attrs.rt.group == GROUP or not self.store.count(key):
            return []
        found = []
        configurations = sorted(self.store.items(key, None), key=lambda c: c["metadata"]["name"])
        for configuration in configurations:
            for hook in configuration.get("webhooks") or []:
                if self._matches(hook, attrs):
                    found.append(hook)
        return found

    def _matches(self, hook: Obj, attrs: Attributes) -> bool:
        if not any(_rule_matches(rule, attrs) for rule in hook.get("rules") or []):
            return False
        selector = hook.get("namespaceSelector")
        if attrs.rt.key == "namespaces":
            labels = ((attrs.obj or attrs.old or {}).get("metadata") or {}).get("labels") or {}
            if not selector_matches(selector, labels):
                return False
        elif attrs.rt.namespaced and not selector_matches(
            selector, self.namespace_labels(attrs.namespace)
        ):
            return False
        objects = [o for o in (attrs.obj, attrs.old) if o is not None]
        return any(
            selector_matches(hook.get("objectSelector"), (o.get("metadata") or {}).get("labels"))
            for o in objects
        )

    # --- one call ---------------------------------------------------------------------------
    def _tls_context(self, hook: Obj) -> ssl.SSLContext:
        """Trust exactly the caBundle (the system roots without one); one context per
        bundle, so connections to a webhook are reused as the API server reuses them."""
        bundle = str((hook.get("clientConfig") or {}).get("caBundle") or "")
        context = self._contexts.get(bundle)
        if context is None:
            try:
                context = (
                    ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
                    if bundle
                    else ssl.create_default_context()
                )
            except (binascii.Error, ValueError, ssl.SSLError) as exc:
                raise CallFailed(
                    f"could not get REST client: unable to load root certificates: {exc}"
                ) from None
            self._contexts[bundle] = context
        return context

    async def _call_or_fail(self, hook: Obj, attrs: Attributes, warnings: list[str]) -> Obj | None:
        """The webhook's response, or None if it was skipped or failed open."""
        name = hook["name"]
        fail = hook.get("failurePolicy", "Fail") != "Ignore"
        try:
            if not self._conditions_hold(hook, attrs):
                return None
            response = await self._call(hook, attrs)
        except CallFailed as exc:
            if not fail:
                return None
            message = f'failed calling webhook "{name}": {exc}'
            raise error(
                500,
                f"Internal error occurred: {message}",
                "InternalError",
                {"causes": [{"message": message}]},
            ) from None
        warnings.extend(str(w) for w in response.get("warnings") or [])
        if not response.get("allowed"):
            raise denied(attrs, name, response.get("status"))
        return response

    def _conditions_hold(self, hook: Obj, attrs: Attributes) -> bool:
        conditions = hook.get("matchConditions") or []
        if not conditions:
            return True
        context = {
            "object": attrs.obj,
            "oldObject": attrs.old,
            "request": _request(attrs, ""),
        }
        errors = []
        for condition in conditions:
            try:
                result = cel.evaluate(condition["expression"], context)
            except Exception as exc:  # the CEL runtime raises its own types
                errors.append(f"{condition.get('name')}: {exc}")
                continue
            if result is False:
                return False
        if errors:  # an error and no false condition: the failure policy decides
            raise CallFailed("matchCondition error: " + "; ".join(errors))
        return True

    def _target(self, hook: Obj) -> tuple[str, str, str, int, str]:
        """(url to report, host to connect to, TLS server name, port, path)."""
        config = hook.get("clientConfig") or {}
        timeout = int(hook.get("timeoutSeconds", 10))
        if config.get("url"):
            url = urlsplit(config["url"])
            port = url.port or 443
            report = f"{config['url']}?timeout={timeout}s"
            return report, url.hostname or "", url.hostname or "", port, url.path or "/"
        service = config.get("service") or {}
        namespace, name = service.get("namespace", ""), service.get("name", "")
        port = int(service.get("port", 443))
        path = service.get("path") or "/"
        server_name = f"{name}.{namespace}.svc"
        report = f"https://{server_name}:{port}{path}?timeout={timeout}s"
        address = self.services.get((namespace, name, port))
        if address is None:
            why = (
                f'no endpoints available for service "{name}"'
                if self.store.peek("services", (namespace, name))
                else f'service "{name}" not found'
            )
            raise CallFailed(f'failed to call webhook: Post "{report}": {why}')
        return report, address[0], server_name, address[1], path

    async def _call(self, hook: Obj, attrs: Attributes) -> Obj:
        report, host, server_name, port, path = self._target(hook)
        timeout = int(hook.get("timeoutSeconds", 10))
        context = self._tls_context(hook)
        uid = str(uuid.uuid4())
        review = {"apiVersion": REVIEW_VERSION, "kind": "AdmissionReview"}
        review["request"] = _request(attrs, uid)  # type: ignore[assignment]
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.calls += 1
        failed = f'failed to call webhook: Post "{report}"'
        try:
            async with asyncio.timeout(timeout):
                async with self._session.post(
                    f"https://{_host(host)}:{port}{path}",
                    params={"timeout": f"{timeout}s"},
                    data=json.dumps(review, separators=(",", ":")),
                    headers={"Content-Type": "application/json"},
                    ssl=context,
                    server_hostname=server_name,
                ) as answer:
                    raw = await answer.read()
                    status = answer.status
        except TimeoutError:
            raise CallFailed(f"{failed}: context deadline exceeded") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            why = _x509(exc, server_name)
            raise CallFailed(f"{failed}: tls: failed to verify certificate: {why}") from None
        except aiohttp.ClientConnectorError as exc:
            raise CallFailed(
                f"{failed}: dial tcp {host}:{port}: connect: connection refused"
                if isinstance(exc.os_error, ConnectionRefusedError)
                else f"{failed}: {exc}"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise CallFailed(f"{failed}: {exc}") from None
        if status != 200:
            text = raw.decode(errors="replace").strip()
            raise CallFailed(
                f'{failed}: an error on the server ("{text[:200]}") has prevented the request '
                "from succeeding"
            )
        try:
            answered = json.loads(raw)
        except ValueError as exc:
            raise CallFailed(f"received invalid webhook response: {exc}") from None
        return _verify(answered, uid)


def denied(attrs: Attributes, webhook: str, result: Any) -> ApiError:
    """The error a refusal becomes (apiserver webhook/errors.ToStatusErr)."""
    status: Obj = clone(result) if isinstance(result, dict) else {}
    code = int(status.get("code") or 403)
    group = attrs.rt.group
    resource = f"{attrs.rt.plural}.{group}" if group else attrs.rt.plural
    name = attrs.name or "Unknown"
    by = f'admission webhook "{webhook}" denied the request'
    if status.get("message"):
        message = f"{by}: {status['message']}"
    elif status.get("reason"):
        message = f"{by}: {status['reason']}"
    else:
        message = f"{by} without explanation"
    details = status.get("details")
    if details is None:
        if code == 500:
            details = {"causes": [{"message": message}]}
        else:
            details = {"name": name, **({"group": group} if group else {}), "kind": attrs.rt.plural}
    prefix = "Internal error occurred" if code == 500 else f'{resource} "{name}" is forbidden'
    reason = status.get("reason") or ("InternalError" if code == 500 else "Forbidden")
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": status.get("status") or "Failure",
        "message": f"{prefix}: {message}",
        "reason": reason,
        "details": details,
        "code": code,
    }
    return ApiError(code, body)


def selector_matches(selector: Obj | None, labels: dict[str, str] | None) -> bool:
    """A metav1.LabelSelector; absent or empty matches everything."""
    if not selector:
        return True
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expression in selector.get("matchExpressions") or []:
        op = ops.get(expression.get("operator", ""))
        if op is None:
            return False
        requirement = Requirement(expression["key"], op, tuple(expression.get("values") or ()))
        if not requirement.matches(labels):
            return False
    return True


def _rule_matches(rule: Obj, attrs: Attributes) -> bool:
    def has(values: Any, wanted: str) -> bool:
        return "*" in (values or []) or wanted in (values or [])

    if not has(rule.get("operations"), attrs.operation):
        return False
    if not has(rule.get("apiGroups"), attrs.rt.group) or not has(
        rule.get("apiVersions"), attrs.rt.version
    ):
        return False
    scope = rule.get("scope", "*")
    if (scope == "Cluster" and attrs.rt.namespaced) or (
        scope == "Namespaced" and not attrs.rt.namespaced
    ):
        return False
    for resource in rule.get("resources") or []:
        main, _, sub = resource.partition("/")
        if main not in ("*", attrs.rt.plural):
            continue
        if (not sub and not attrs.subresource) or (sub and sub in ("*", attrs.subresource)):
            return True
    return False


def _request(attrs: Attributes, uid: str) -> Obj:
    rt = attrs.rt
    group, version, kind = attrs.kind or (rt.group, rt.version, rt.kind)
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": rt.group, "version": rt.version, "resource": rt.plural}
    request: Obj = {"uid": uid, "kind": gvk, "resource": gvr}
    if attrs.subresource:
        request["subResource"] = attrs.subresource
    request |= {"requestKind": gvk, "requestResource": gvr}
    if attrs.subresource:
        request["requestSubResource"] = attrs.subresource
    if attrs.name:
        request["name"] = attrs.name
    if attrs.namespace and rt.namespaced:
        request["namespace"] = attrs.namespace
    options = _OPTIONS.get(attrs.operation)
    return request | {
        "operation": attrs.operation,
        "userInfo": USER,
        "object": attrs.obj,
        "oldObject": attrs.old,
        "dryRun": False,
        "options": {"kind": options, "apiVersion": "meta.k8s.io/v1"} if options else None,
    }


def _verify(review: Any, uid: str) -> Obj:
    """apiserver's VerifyAdmissionResponse for AdmissionReview v1."""
    bad = "received invalid webhook response"
    if not isinstance(review, dict):
        raise CallFailed(f"{bad}: expected an AdmissionReview object")
    if review.get("apiVersion") != REVIEW_VERSION or review.get("kind") != "AdmissionReview":
        raise CallFailed(
            f"{bad}: expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, "
            f"got {review.get('apiVersion')}, Kind={review.get('kind')}"
        )
    response = review.get("response")
    if not isinstance(response, dict):
        raise CallFailed(f"{bad}: webhook response was absent")
    if response.get("uid") != uid:
        raise CallFailed(f'{bad}: expected response.uid="{uid}", got "{response.get("uid")}"')
    if response.get("patch") is not None and response.get("patchType") != "JSONPatch":
        raise CallFailed(
            f'{bad}: webhook returned invalid patchType: "{response.get("patchType")}"'
        )
    return response


def _patch(hook: Obj, response: Obj) -> list[Any]:
    raw = response.get("patch")
    if raw is None:
        return []
    try:
        operations = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise error(
            500,
            f'Internal error occurred: failed calling webhook "{hook["name"]}": received '
            f"undecodable patch in webhook response: {exc}",
            "InternalError",
        ) from None
    return operations if isinstance(operations, list) else [operations]


def _x509(exc: aiohttp.ClientConnectorCertificateError, server_name: str) -> str:
    """Go's words for why the certificate was not accepted."""
    verify = str(getattr(exc.certificate_error, "verify_message", "") or exc.certificate_error)
    if "mismatch" in verify.lower():
        return f"x509: certificate is not valid for {server_name}"
    if "expired" in verify.lower():
        return "x509: certificate has expired or is not yet valid"
    return "x509: certificate signed by unknown authority"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
