"""A test hook: every request as the API server's authorizer sees it.

The real API server turns each request into authorization attributes (verb, API group,
resource, subresource, namespace, name; or a non-resource path) before RBAC decides.
`Emulator.start_audit()` makes the emulator keep those attributes for every request, with
the client's User-Agent, so a test can check what a client did against RBAC rules
(tests/deploy/test_rbac_calls.py). Never reachable over HTTP.

One admission plugin adds checks of its own, and they are recorded too, marked
`implied`: OwnerReferencesPermissionEnforcement (on in many clusters) requires `update`
on `<owner>/finalizers` for each ownerReference with `blockOwnerDeletion` that a request
sets. Recorded for creates; an update is checked only for references it adds, which
this hook does not work out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.api import truthy
from emulator.resources import Registry, ResourceType

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class Request:
    """The authorization attributes of one request (or of a check it implies)."""

    user_agent: str
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    """A non-resource request's URL path (discovery, /version, /healthz); else empty."""
    implied: bool = False
    """Not a request of its own: a check an admission plugin makes for one."""

    @property
    def is_resource(self) -> bool:
        return not self.path


def verb(method: str, name: str, query: dict[str, str]) -> str:
    """The authorization verb of a resource request (watch and list are GETs; a DELETE
    without a name is deletecollection)."""
    if method == "GET":
        if truthy(query.get("watch")):
            return "watch"
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return _VERBS.get(method, method.lower())


def resource_request(
    agent: str,
    method: str,
    query: dict[str, str],
    rt: ResourceType,
    namespace: str | None,
    name: str,
    sub: str,
) -> Request:
    action = verb(method, name, query)
    term = query.get("fieldSelector", "")
    if action in ("list", "watch") and term.startswith("metadata.name=") and "," not in term:
        # as the API server's request info does: a list or watch selecting one name is a
        # request for that name, so a rule's resourceNames can grant it
        name = term.removeprefix("metadata.name=")
    return Request(agent, action, rt.group, rt.plural, sub, namespace or "", name)


def owner_checks(agent: str, request: Request, body: Any, registry: Registry) -> list[Request]:
    """The `update <owner>/finalizers` checks of a create whose owner references set
    blockOwnerDeletion."""
    if request.verb != "create" or request.subresource or not isinstance(body, dict):
        return []
    refs = (body.get("metadata") or {}).get("ownerReferences") or ()
    out = []
    for ref in refs:
        if not isinstance(ref, dict) or not ref.get("blockOwnerDeletion"):
            continue
        group = str(ref.get("apiVersion", "")).rpartition("/")[0]
        owner = registry.by_kind(group, str(ref.get("kind", "")))
        if owner is None:
            continue
        out.append(
            Request(
                agent,
                "update",
                owner.group,
                owner.plural,
                "finalizers",
                request.namespace if owner.namespaced else "",
                str(ref.get("name", "")),
                implied=True,
            )
        )
    return out
