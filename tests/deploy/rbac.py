"""A small RBAC evaluator: what the Kubernetes RBAC authorizer would decide for a request,
from Roles, ClusterRoles (with aggregation) and their bindings.

The rules it follows are the authorizer's (plugin/pkg/auth/authorizer/rbac):
- a ClusterRoleBinding grants its ClusterRole's rules everywhere: every namespace and
  cluster-scoped resources; a RoleBinding grants its Role's or ClusterRole's rules in its
  own namespace only, and never for cluster-scoped resources or non-resource URLs;
- a rule matches a verb, API group and resource by name or `*`; `resource/subresource`
  names a subresource, `*/subresource` that subresource of every resource; resourceNames,
  when present, must contain the request's name (so no list, watch or create matches);
  nonResourceURLs match a path exactly or by a trailing `*` prefix;
- an aggregated ClusterRole's rules are those of every ClusterRole whose labels its
  clusterRoleSelectors match (the controller-manager keeps them so, to a fixed point);
- a ServiceAccount is the user `system:serviceaccount:<ns>:<name>` in the groups
  `system:serviceaccounts`, `system:serviceaccounts:<ns>` and `system:authenticated`.

BOOTSTRAP holds the few built-in objects the checks need: the aggregated `admin`,
`edit` and `view` roles (how tenants get access) and `system:discovery`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from emulator.audit import Request

Obj = dict[str, Any]
RBAC = "rbac.authorization.k8s.io/v1"


def _aggregated(name: str, selector: str, label: str | None) -> Obj:
    meta: Obj = {"name": name}
    if label:
        meta["labels"] = {f"rbac.authorization.k8s.io/{label}": "true"}
    return {
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": meta,
        "aggregationRule": {
            "clusterRoleSelectors": [
                {"matchLabels": {f"rbac.authorization.k8s.io/{selector}": "true"}}
            ]
        },
        "rules": [],
    }


BOOTSTRAP: list[Obj] = [
    _aggregated("admin", "aggregate-to-admin", None),
    _aggregated("edit", "aggregate-to-edit", "aggregate-to-admin"),
    _aggregated("view", "aggregate-to-view", "aggregate-to-edit"),
    {
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": "system:discovery"},
        "rules": [
            {
                "verbs": ["get"],
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            }
        ],
    },
    {
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:discovery"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:discovery",
        },
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": "system:authenticated",
            }
        ],
    },
]


@dataclass(frozen=True)
class Subject:
    user: str
    groups: frozenset[str] = frozenset({"system:authenticated"})

    @staticmethod
    def service_account(namespace: str, name: str) -> Subject:
        return Subject(
            f"system:serviceaccount:{namespace}:{name}",
            frozenset(
                {
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{namespace}",
                    "system:authenticated",
                }
            ),
        )


@dataclass(frozen=True)
class Grant:
    """One rule of one role, as a binding applies it: `namespace` None means everywhere."""

    binding: str
    role: str
    index: int
    rule: Obj
    namespace: str | None

    def atoms(self) -> Iterator[tuple[str, str, str, str]]:
        """(verb, apiGroup, resource, resourceName or '') for every combination the rule
        lists; non-resource rules give (verb, '', url, '')."""
        names = self.rule.get("resourceNames") or [""]
        for verb in self.rule.get("verbs") or ():
            for url in self.rule.get("nonResourceURLs") or ():
                yield verb, "", url, ""
            for group in self.rule.get("apiGroups") or ():
                for resource in self.rule.get("resources") or ():
                    for name in names:
                        yield verb, group, resource, name


def _matches_selector(labels: dict[str, str], selector: Obj) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or ():
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def rule_matches(rule: Obj, request: Request) -> bool:
    """Whether one PolicyRule allows `request` (the authorizer's RuleAllows)."""
    verbs = rule.get("verbs") or ()
    if "*" not in verbs and request.verb not in verbs:
        return False
    if not request.is_resource:
        if rule.get("resources") or rule.get("apiGroups"):
            return False
        return any(
            url == request.path or (url.endswith("*") and request.path.startswith(url[:-1]))
            for url in rule.get("nonResourceURLs") or ()
        )
    if rule.get("nonResourceURLs"):
        return False
    groups = rule.get("apiGroups") or ()
    if "*" not in groups and request.group not in groups:
        return False
    combined = (
        f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    )
    resource_ok = any(
        r in ("*", combined) or (request.subresource and r == f"*/{request.subresource}")
        for r in rule.get("resources") or ()
    )
    if not resource_ok:
        return False
    names = rule.get("resourceNames") or ()
    return not names or request.name in names


class Rbac:
    """The RBAC objects of a cluster: `allows(subject, request)`, `grants_for(...)`."""

    def __init__(self, objects: Iterable[Obj], bootstrap: Iterable[Obj] = BOOTSTRAP) -> None:
        everything = [*bootstrap, *objects]
        self.cluster_roles: dict[str, Obj] = {
            o["metadata"]["name"]: o for o in everything if o["kind"] == "ClusterRole"
        }
        self.roles: dict[tuple[str, str], Obj] = {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in everything
            if o["kind"] == "Role"
        }
        self.bindings = [
            o for o in everything if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
        ]
        self.cluster_rules = self._aggregate()

    def _aggregate(self) -> dict[str, list[Obj]]:
        rules = {n: list(r.get("rules") or ()) for n, r in self.cluster_roles.items()}
        changed = True
        while changed:
            changed = False
            for name, role in self.cluster_roles.items():
                selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors")
                if not selectors:
                    continue
                for other, source in self.cluster_roles.items():
                    labels = source["metadata"].get("labels") or {}
                    if other != name and any(_matches_selector(labels, s) for s in selectors):
                        for rule in rules[other]:
                            if rule not in rules[name]:
                                rules[name].append(rule)
                                changed = True
        return rules

    def role_rules(self, ref: Obj, namespace: str | None) -> list[Obj]:
        if ref["kind"] == "ClusterRole":
            return self.cluster_rules.get(ref["name"], [])
        role = self.roles.get((namespace or "", ref["name"]))
        return list(role.get("rules") or ()) if role else []

    def missing_roles(self) -> list[str]:
        """Bindings whose roleRef names no role (the binding then grants nothing)."""
        out = []
        for b in self.bindings:
            ref, ns = b["roleRef"], b["metadata"].get("namespace")
            known = (
                ref["name"] in self.cluster_roles
                if ref["kind"] == "ClusterRole"
                else (ns, ref["name"]) in self.roles
            )
            if not known:
                out.append(f"{b['kind']} {b['metadata']['name']}: no {ref['kind']} {ref['name']}")
        return out

    def grants_for(self, subject: Subject) -> list[Grant]:
        out = []
        for b in self.bindings:
            if not any(_names(s, subject) for s in b.get("subjects") or ()):
                continue
            namespace = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
            role = b["roleRef"]["name"]
            for i, rule in enumerate(self.role_rules(b["roleRef"], namespace)):
                out.append(Grant(f"{b['kind']}/{b['metadata']['name']}", role, i, rule, namespace))
        return out

    def granting(self, subject: Subject, request: Request) -> list[Grant]:
        """The grants that allow `request` (empty: forbidden)."""
        found = []
        for grant in self.grants_for(subject):
            if grant.namespace is not None and (
                not request.is_resource or grant.namespace != request.namespace
            ):
                continue
            if rule_matches(grant.rule, request):
                found.append(grant)
        return found

    def allows(self, subject: Subject, request: Request) -> bool:
        return bool(self.granting(subject, request))


def _names(ref: Obj, subject: Subject) -> bool:
    kind = ref["kind"]
    if kind == "ServiceAccount":
        return subject.user == f"system:serviceaccount:{ref.get('namespace', '')}:{ref['name']}"
    if kind == "User":
        return subject.user == ref["name"]
    if kind == "Group":
        return ref["name"] in subject.groups
    return False


def ask(
    verb: str,
    resource: str,
    *,
    group: str = "",
    namespace: str = "",
    name: str = "",
    path: str = "",
) -> Request:
    """A request to evaluate: `resource` may be `resource/subresource`."""
    plural, _, sub = resource.partition("/")
    return Request("test", verb, group, plural, sub, namespace, name, path)
