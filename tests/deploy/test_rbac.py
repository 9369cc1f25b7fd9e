"""The RBAC objects of deploy/, read by the evaluator in rbac.py: nothing dangerous is
granted to anyone, the controller's secrets and Lease access is confined to its own
objects, and tenants reach GangJobs only in their own namespace and Queues not at all.
(That every rule the controller gets is used, and every request it makes is allowed, is
test_rbac_calls.py.)"""

from __future__ import annotations

import pytest

from tests.deploy.rbac import RBAC, Obj, Rbac, Subject, ask, rule_matches
from tests.deploy.render import NAMESPACE, kustomize

CONTROLLER = Subject.service_account(NAMESPACE, "phalanx-controller")
DANGEROUS_VERBS = {"escalate", "bind", "impersonate", "*"}
DANGEROUS_RESOURCES = {
    "*",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "pods/proxy",
    "nodes/proxy",
    "services/proxy",
    "serviceaccounts/token",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
    "certificatesigningrequests/approval",
}


def roles(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole")]


def rule_problems(role: Obj) -> list[str]:
    """Why a role is refused outright: wildcards, privilege escalation, exec, secrets
    outside phalanx-system."""
    where = f"{role['kind']} {role['metadata']['name']}"
    out = []
    for i, rule in enumerate(role.get("rules") or ()):
        at = f"{where} rules[{i}]"
        if DANGEROUS_VERBS & set(rule.get("verbs") or ()):
            out.append(f"{at}: verbs {sorted(DANGEROUS_VERBS & set(rule['verbs']))}")
        if "*" in (rule.get("apiGroups") or ()) or "*" in (rule.get("nonResourceURLs") or ()):
            out.append(f"{at}: wildcard API group or URL")
        resources = set(rule.get("resources") or ())
        bad = {r for r in resources if r in DANGEROUS_RESOURCES or r.startswith("*/")}
        if bad:
            out.append(f"{at}: resources {sorted(bad)}")
        if "secrets" in resources and not (
            role["kind"] == "Role" and role["metadata"]["namespace"] == NAMESPACE
        ):
            out.append(f"{at}: secrets outside {NAMESPACE}")
    return out


@pytest.fixture
def cluster() -> Rbac:
    """The base's RBAC plus tenants: alice admin of team-a, carol viewer of team-a, bob
    editor of team-b."""
    tenants = [
        binding("alice-admin", "team-a", "admin", "alice"),
        binding("carol-view", "team-a", "view", "carol"),
        binding("bob-edit", "team-b", "edit", "bob"),
    ]
    return Rbac([*kustomize("default"), *tenants])


def binding(name: str, namespace: str, cluster_role: str, user: str) -> Obj:
    return {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def gangjobs(verb: str, namespace: str, sub: str = "") -> object:
    return ask(
        verb, f"gangjobs/{sub}" if sub else "gangjobs", group="phalanx.dev", namespace=namespace
    )


@pytest.mark.parametrize("name", ["default", "dev", "prometheus", "cert-manager"])
def test_no_role_in_deploy_grants_anything_dangerous(name: str) -> None:
    found = roles(kustomize(name))
    assert found and [p for r in found for p in rule_problems(r)] == []


def test_the_danger_check_refuses_wildcards_exec_escalation_and_cluster_wide_secrets() -> None:
    role = {
        "kind": "ClusterRole",
        "metadata": {"name": "too-much"},
        "rules": [
            {
                "apiGroups": ["*"],
                "resources": ["pods/exec", "secrets"],
                "verbs": ["get", "escalate"],
            }
        ],
    }
    assert rule_problems(role) == [
        "ClusterRole too-much rules[0]: verbs ['escalate']",
        "ClusterRole too-much rules[0]: wildcard API group or URL",
        "ClusterRole too-much rules[0]: resources ['pods/exec']",
        "ClusterRole too-much rules[0]: secrets outside phalanx-system",
    ]


def test_every_binding_names_a_role_that_exists() -> None:
    assert Rbac(kustomize("default")).missing_roles() == []


def test_the_controller_reads_only_its_own_secret() -> None:
    rbac = Rbac(kustomize("default"))
    assert rbac.allows(
        CONTROLLER, ask("get", "secrets", namespace=NAMESPACE, name="phalanx-webhook-tls")
    )
    assert not rbac.allows(CONTROLLER, ask("get", "secrets", namespace=NAMESPACE, name="other"))
    assert not rbac.allows(CONTROLLER, ask("list", "secrets", namespace=NAMESPACE))
    assert not rbac.allows(
        CONTROLLER, ask("get", "secrets", namespace="team-a", name="phalanx-webhook-tls")
    )
    assert not rbac.allows(CONTROLLER, ask("list", "secrets"))


@pytest.mark.parametrize("name", ["default", "dev", "prometheus", "cert-manager"])
def test_no_secret_but_the_webhooks_own_certificate_is_open_to_the_controller(name: str) -> None:
    """The serving certificate's Secret holds the CA key too (deploy/README.md, Security):
    nothing else of any Secret, the cert-manager CA's included, is the controller's."""
    rbac = Rbac(kustomize(name))
    elsewhere = [
        (NAMESPACE, "other"),
        (NAMESPACE, "phalanx-webhook-ca"),
        (NAMESPACE, ""),
        ("team-a", "phalanx-webhook-tls"),
        ("", ""),
    ]
    for verb in ("get", "list", "watch", "update", "patch", "delete", "deletecollection"):
        for namespace, secret in elsewhere:
            request = ask(verb, "secrets", namespace=namespace, name=secret)
            assert not rbac.allows(CONTROLLER, request), (verb, namespace, secret)


def test_the_controller_renews_only_its_own_lease_in_its_namespace() -> None:
    rbac = Rbac(kustomize("default"))
    lease = {"group": "coordination.k8s.io", "namespace": NAMESPACE}
    assert rbac.allows(CONTROLLER, ask("update", "leases", name="phalanx-controller", **lease))
    assert not rbac.allows(CONTROLLER, ask("update", "leases", name="kube-scheduler", **lease))
    assert not rbac.allows(
        CONTROLLER,
        ask(
            "update",
            "leases",
            group="coordination.k8s.io",
            namespace="kube-system",
            name="phalanx-controller",
        ),
    )


def test_the_controller_cannot_exec_into_or_rewrite_user_pods() -> None:
    rbac = Rbac(kustomize("default"))
    assert not rbac.allows(CONTROLLER, ask("create", "pods/exec", namespace="team-a", name="p"))
    assert not rbac.allows(CONTROLLER, ask("update", "pods", namespace="team-a", name="p"))
    assert not rbac.allows(CONTROLLER, ask("patch", "pods", namespace="team-a", name="p"))


def test_a_namespace_admin_manages_gangjobs_of_their_own_namespace(cluster: Rbac) -> None:
    alice = Subject("alice")
    for verb in ("create", "get", "list", "watch", "update", "patch", "delete"):
        assert cluster.allows(alice, gangjobs(verb, "team-a")), verb


def test_team_as_admin_cannot_read_team_bs_gangjobs(cluster: Rbac) -> None:
    alice = Subject("alice")
    for verb in ("get", "list", "watch", "create", "delete"):
        assert not cluster.allows(alice, gangjobs(verb, "team-b")), verb


def test_tenants_cannot_edit_queues_or_gangjob_status(cluster: Rbac) -> None:
    for user in ("alice", "bob", "carol"):
        for verb in ("create", "update", "patch", "delete"):
            assert not cluster.allows(
                Subject(user), ask(verb, "queues", group="phalanx.dev", name="team-a")
            )
        assert not cluster.allows(Subject(user), gangjobs("patch", "team-a", "status"))
        assert not cluster.allows(Subject(user), gangjobs("patch", "team-b", "status"))


def test_editors_submit_gangjobs_and_viewers_only_read_them(cluster: Rbac) -> None:
    bob, carol = Subject("bob"), Subject("carol")
    assert cluster.allows(bob, gangjobs("create", "team-b"))
    assert not cluster.allows(bob, gangjobs("create", "team-a"))
    assert cluster.allows(carol, gangjobs("list", "team-a"))
    assert cluster.allows(carol, gangjobs("get", "team-a", "status"))
    assert not cluster.allows(carol, gangjobs("create", "team-a"))


def test_without_the_aggregation_labels_admins_get_no_gangjobs() -> None:
    objects = kustomize("default")
    for o in objects:
        if o["metadata"]["name"].startswith("phalanx-gangjob-"):
            o["metadata"]["labels"] = {}
    rbac = Rbac([*objects, binding("alice-admin", "team-a", "admin", "alice")])
    assert not rbac.allows(Subject("alice"), gangjobs("get", "team-a"))


# ---- the evaluator's own rules ------------------------------------------------------------


def test_a_rolebinding_to_a_cluster_role_grants_only_in_its_namespace() -> None:
    role = {
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": "r"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps", "nodes"], "verbs": ["get"]}],
    }
    rbac = Rbac([role, binding("b", "ns", "r", "u")])
    assert rbac.allows(Subject("u"), ask("get", "configmaps", namespace="ns", name="x"))
    assert not rbac.allows(Subject("u"), ask("get", "configmaps", namespace="other", name="x"))
    assert not rbac.allows(Subject("u"), ask("get", "nodes", name="n"))


def test_rules_match_subresources_resource_names_and_discovery_paths() -> None:
    rule = {
        "apiGroups": [""],
        "resources": ["*/status", "leases"],
        "resourceNames": ["a"],
        "verbs": ["get"],
    }
    assert rule_matches(rule, ask("get", "pods/status", name="a"))
    assert not rule_matches(rule, ask("get", "pods", name="a"))
    assert not rule_matches(rule, ask("get", "leases", name="b"))
    assert Rbac([]).allows(Subject("anyone"), ask("get", "", path="/apis/scheduling.k8s.io/v1"))
    assert not Rbac([]).allows(Subject("anyone"), ask("get", "", path="/metrics"))
