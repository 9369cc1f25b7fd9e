"""Least privilege, proven: every request a running controller makes (scenario.py records
them at the API server) is allowed by the RBAC objects of deploy/, and every rule those
objects grant the controller is used by some request; for each way of installing it that
changes what the controller does: deploy/default (it makes its own webhook certificates)
and deploy/overlays/cert-manager (it only follows the Secret cert-manager writes). The
same runs show the samples work: the PyTorch DDP job is admitted whole, and a team cannot
use another's queue."""

from __future__ import annotations

import pytest

from emulator.audit import Request
from tests.deploy.rbac import Grant, Rbac, Subject, rule_matches
from tests.deploy.render import NAMESPACE, REPO, kustomize
from tests.deploy.scenario import INSTALLS, Run, run_scenario

CONTROLLER = Subject.service_account(NAMESPACE, "phalanx-controller")
WEBHOOK_ROLES = {"phalanx-webhook"}
"""Grants for the admission webhook's certificates, served by the same process."""


@pytest.fixture(scope="module", params=INSTALLS)
def run(request: pytest.FixtureRequest) -> Run:
    return run_scenario(request.param)


def describe(request: Request) -> str:
    if not request.is_resource:
        return f"{request.verb} {request.path}"
    resource = request.resource + (f"/{request.subresource}" if request.subresource else "")
    group = request.group or "core"
    where = f" in {request.namespace}" if request.namespace else ""
    named = f" {request.name}" if request.name else ""
    return f"{request.verb} {group} {resource}{named}{where}" + (
        " (implied)" if request.implied else ""
    )


def unused(grants: list[Grant], requests: list[Request]) -> list[str]:
    """Each (verb, group, resource, name) a grant lists that no request used through it."""
    out = []
    for grant in grants:
        for verb, group, resource, name in grant.atoms():
            atom = {"verbs": [verb], "apiGroups": [group], "resources": [resource]}
            if name:
                atom["resourceNames"] = [name]
            used = any(
                rule_matches(atom, q)
                and (grant.namespace is None or q.namespace == grant.namespace)
                for q in requests
            )
            if not used:
                out.append(f"{grant.role}: {verb} {group or 'core'} {resource} {name}".rstrip())
    return out


def controller_grants(rbac: Rbac, roles: set[str] | None = None) -> list[Grant]:
    return [
        g
        for g in rbac.grants_for(CONTROLLER)
        if not g.binding.startswith("ClusterRoleBinding/system:")
        and (g.role in roles if roles is not None else g.role not in WEBHOOK_ROLES)
    ]


def test_every_request_of_the_controller_is_allowed_by_deploy(run: Run) -> None:
    rbac = Rbac(kustomize(run.install))
    denied = sorted({describe(q) for q in run.requests if not rbac.allows(CONTROLLER, q)})
    assert len(run.requests) > 100
    assert denied == []


def test_every_rule_granted_to_the_controller_is_used(run: Run) -> None:
    rbac = Rbac(kustomize(run.install))
    grants = controller_grants(rbac)
    assert grants and unused(grants, run.requests) == []


def test_every_rule_granted_for_the_webhook_certificates_is_used(run: Run) -> None:
    if not [p for p in (REPO / "controller" / "webhook").glob("*.py") if p.name != "__init__.py"]:
        pytest.skip("controller/webhook is not built yet: its grants are checked once it serves")
    rbac = Rbac(kustomize(run.install))
    assert unused(controller_grants(rbac, WEBHOOK_ROLES), run.requests) == []


def test_the_controller_writes_the_secret_and_the_caBundles_only_if_it_makes_the_certificates(
    run: Run,
) -> None:
    writes = {
        (q.resource, q.verb)
        for q in run.requests
        if q.verb not in ("get", "list", "watch")
        and (q.resource == "secrets" or q.group == "admissionregistration.k8s.io")
    }
    ours = {
        ("secrets", "create"),
        ("secrets", "update"),
        ("validatingwebhookconfigurations", "update"),
        ("mutatingwebhookconfigurations", "update"),
    }
    assert writes == (set() if run.install == "cert-manager" else ours)


def test_a_request_outside_the_grants_would_be_caught(run: Run) -> None:
    rbac = Rbac(kustomize(run.install))
    sneaky = Request("phalanx/", "list", "", "secrets", namespace="team-a")
    assert not rbac.allows(CONTROLLER, sneaky)
    without_events = [q for q in run.requests if q.resource != "events"]
    assert unused(controller_grants(rbac), without_events) == [
        "phalanx-controller: create events.k8s.io events"
    ]


def test_the_scenario_took_every_path_it_describes(run: Run) -> None:
    assert run.unseen_namespace_labels is None
    assert run.deleted_node and run.deleted_node not in run.readmitted_nodes
    assert len(run.readmitted_nodes) == 4
    record = run.foreign_record["data"]["admission"]
    assert "etl-b-0" in record and "etl-a-0" not in record
    assert run.job_gone


def test_the_sample_ddp_job_is_admitted_whole_with_the_torchrun_environment(run: Run) -> None:
    pods = run.first_pods
    assert len({p["spec"]["nodeName"] for p in pods}) == 4
    for pod in pods:
        [trainer] = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in trainer["env"]}
        assert (env["NNODES"], env["LOCAL_WORLD_SIZE"], env["WORLD_SIZE"]) == ("4", "8", "32")
        assert env["MASTER_ADDR"] == "llama-ddp-worker-0.llama-ddp.team-a.svc"
        assert "--nproc-per-node=$(LOCAL_WORLD_SIZE)" in trainer["args"]
    assert sorted(int(p["metadata"]["name"].rsplit("-", 1)[1]) for p in pods) == [0, 1, 2, 3]


def test_a_team_cannot_run_a_job_on_another_teams_queue(run: Run) -> None:
    status = run.wrong_queue_job["status"]
    [queued] = status["conditions"]
    assert status["phase"] == "Pending"
    assert (
        queued["message"] == "namespace team-a is not allowed by queue team-b's namespaceSelector"
    )
