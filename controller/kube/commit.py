"""The commit protocol: make a reservation true in the cluster, crash-safely.

1. Commit point: the GangJob's `status.admission` through `/status`, with the
   resourceVersion the decision was made on. A 409 means the job changed meanwhile: the
   caller rolls its ledger back (`CommitConflict`).
2. Per claim: the `resource.kubernetes.io/delete-protection` finalizer (a normal update,
   skipped if present), then `status.allocation` and `status.reservedFor` in one
   `/status` write, as kube-scheduler does.
3. Per pod: the binding.

Every step first looks at the object it is given: a step whose result is already there
counts as done, so after a crash the same calls on freshly read objects roll forward
from wherever the last run stopped. A step that finds someone else's result (a claim
allocated other devices, a pod bound elsewhere) raises `CommitBroken`: the admission
no longer holds and must be rolled back. Each write carries the resourceVersion it was
computed from, so nothing is decided on a stale read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.kube.resources import GANG_JOBS, PODS, RESOURCE_CLAIMS
from controller.kube.rest import MERGE_PATCH, KubeError, Obj, Rest

DELETE_PROTECTION = "resource.kubernetes.io/delete-protection"


class CommitConflict(Exception):
    """The GangJob changed since the decision: roll the reservation back."""


class CommitBroken(Exception):
    """Someone else's result is where ours should be: the admission cannot complete."""


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _precondition(obj: Obj) -> dict[str, Any]:
    return {"resourceVersion": _meta(obj)["resourceVersion"]}


async def write_admission(rest: Rest, job: Obj, record: Obj, status: Obj | None = None) -> Obj:
    """The commit point. Returns the GangJob as written (or as found, if done).
    `status` adds other status fields (phase, conditions) to the same write."""
    current = (job.get("status") or {}).get("admission") or {}
    if current.get("admissionId") == record["admissionId"]:
        return job
    if current:
        raise CommitConflict(f"GangJob already holds admission {current.get('admissionId')}")
    path = GANG_JOBS.path(_meta(job)["namespace"], _meta(job)["name"], "status")
    body = {"metadata": _precondition(job), "status": {**(status or {}), "admission": record}}
    try:
        return await rest.request("PATCH", path, body=body, content_type=MERGE_PATCH)
    except KubeError as exc:
        if exc.status == 409:
            raise CommitConflict(exc.message) from exc
        raise


def results(claim: Obj) -> list[dict[str, str]]:
    """The devices a claim is allocated, as allocation results (request, driver, pool,
    device)."""
    allocation = (claim.get("status") or {}).get("allocation") or {}
    return [
        {k: str(r.get(k)) for k in ("request", "driver", "pool", "device")}
        for r in (allocation.get("devices") or {}).get("results") or ()
    ]


@dataclass(frozen=True, slots=True)
class ClaimStep:
    """One claim of one pod: the devices the record gives it, and the pod's node."""

    claim: Obj
    results: tuple[Mapping[str, str], ...]
    pod: Obj
    node: str


async def protect_claim(rest: Rest, claim: Obj) -> Obj:
    """Add the delete-protection finalizer, unless the claim has it already."""
    finalizers = list(_meta(claim).get("finalizers") or ())
    if DELETE_PROTECTION in finalizers:
        return claim
    path = RESOURCE_CLAIMS.path(_meta(claim)["namespace"], _meta(claim)["name"])
    body = {"metadata": {**_precondition(claim), "finalizers": [*finalizers, DELETE_PROTECTION]}}
    return await rest.request("PATCH", path, body=body, content_type=MERGE_PATCH)


async def allocate_claim(rest: Rest, step: ClaimStep) -> Obj:
    """Allocate the recorded devices and reserve the claim for its pod, in one write."""
    claim, pod = step.claim, step.pod
    wanted = sorted(step.results, key=lambda r: (r["request"], r["device"]))
    have = sorted(results(claim), key=lambda r: (r["request"], r["device"]))
    consumer = {"resource": "pods", "name": _meta(pod)["name"], "uid": _meta(pod)["uid"]}
    reserved = list((claim.get("status") or {}).get("reservedFor") or ())
    if have and have != [dict(r) for r in wanted]:
        raise CommitBroken(f"ResourceClaim {_meta(claim)['name']} is allocated other devices")
    if have and any(c.get("uid") == consumer["uid"] for c in reserved):
        return claim
    status: dict[str, Any] = {"reservedFor": [*reserved, consumer]}
    if not have:
        status["allocation"] = {
            "devices": {"results": [dict(r) for r in wanted]},
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": [step.node]}
                        ]
                    }
                ]
            },
        }
    path = RESOURCE_CLAIMS.path(_meta(claim)["namespace"], _meta(claim)["name"], "status")
    body = {"metadata": _precondition(claim), "status": status}
    return await rest.request("PATCH", path, body=body, content_type=MERGE_PATCH)


async def bind(rest: Rest, pod: Obj, node: str) -> None:
    """Bind the pod to its node, unless it is bound there already."""
    bound = (pod.get("spec") or {}).get("nodeName")
    name, namespace = _meta(pod)["name"], _meta(pod)["namespace"]
    if bound == node:
        return
    if bound:
        raise CommitBroken(f"Pod {namespace}/{name} is bound to {bound}, not {node}")
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": _meta(pod).get("uid")},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    try:
        await rest.request("POST", PODS.path(namespace, name, "binding"), body=body)
    except KubeError as exc:
        if exc.status != 409:
            raise
        fresh = await rest.get(PODS.path(namespace, name))
        if (fresh.get("spec") or {}).get("nodeName") != node:
            raise CommitBroken(f"Pod {namespace}/{name} cannot be bound: {exc.message}") from exc


async def materialise(rest: Rest, claims: list[ClaimStep], bindings: list[tuple[Obj, str]]) -> None:
    """Steps 2 and 3 after the commit point: every claim, then every binding (a pod is
    bound only once all claims of the gang are allocated and reserved for it)."""
    for step in claims:
        protected = await protect_claim(rest, step.claim)
        await allocate_claim(rest, ClaimStep(protected, step.results, step.pod, step.node))
    for pod, node in bindings:
        await bind(rest, pod, node)
