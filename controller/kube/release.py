"""Release in the cluster: the commit protocol in reverse, one idempotent step at a time.

The admission record is cleared first (that is the release's commit point, and returns
the quota); what the admission made is then stale and is torn down here. (The devices of
a gang whose pods all succeeded count as free from its release on: the caches know it
deallocates them next, and whoever is given them waits for that, see drain.py.)

- pods are deleted (gracefully: the kubelet stops them); a gang evicted while it ran
  (preempted, its node lost, not ready in time, suspended, or stopped because one of its
  pods failed) first gets the DisruptionTarget pod
  condition on each pod, as the scheduler and the taint manager do, so the job's
  controller and users can tell a disruption from a failure;
- a claim is released once every pod it is reserved for is done (gone, finished, or
  deleted before binding), in the order the resourceclaim controller expects and the
  API server enforces: `reservedFor` cleared, then `allocation`, then our
  delete-protection finalizer removed; then the claim is deleted.

Until a stale pod is gone or finished, and a stale claim deallocated, the caches count
them as usage by others, so nothing they hold is handed out again early. Every write
carries the resourceVersion it was computed from; a 409 means a newer version is on its
way through the watch, and the next pass starts from that.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from controller.kube.commit import DELETE_PROTECTION
from controller.kube.reconcile import pod_done, pod_phase
from controller.kube.resources import PODS, RESOURCE_CLAIMS
from controller.kube.rest import MERGE_PATCH, KubeError, Obj, Rest

DISRUPTION_TARGET = "DisruptionTarget"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


async def delete(rest: Rest, path: str, query: dict[str, object] | None = None) -> None:
    """DELETE; an object already gone counts as deleted."""
    try:
        await rest.request("DELETE", path, query=query)
    except KubeError as exc:
        if exc.status != 404:
            raise


async def delete_pod(rest: Rest, pod: Obj) -> None:
    """Delete a pod, unless its deletion has begun; the uid precondition keeps a
    new pod of the same name safe."""
    meta = _meta(pod)
    if meta.get("deletionTimestamp"):
        return
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": meta["uid"]}}
    try:
        await rest.request("DELETE", PODS.path(meta["namespace"], meta["name"]), body=body)
    except KubeError as exc:
        if exc.status not in (404, 409):
            raise


async def disrupt_pod(rest: Rest, pod: Obj, reason: str, message: str, now: str) -> Obj | None:
    """Mark a pod about to be deleted with the DisruptionTarget condition (merged by type,
    so the kubelet's conditions stay); a finished, deleted or marked pod is left alone.
    Returns the pod as marked (None if left alone or gone)."""
    meta, status = _meta(pod), pod.get("status") or {}
    if meta.get("deletionTimestamp") or pod_phase(pod) in ("Succeeded", "Failed"):
        return None
    if any(c.get("type") == DISRUPTION_TARGET for c in status.get("conditions") or ()):
        return None
    condition = {
        "type": DISRUPTION_TARGET,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }
    body = {"status": {"conditions": [condition]}}
    try:
        return await rest.request(
            "PATCH",
            PODS.path(meta["namespace"], meta["name"], "status"),
            body=body,
            content_type=STRATEGIC_PATCH,
        )
    except KubeError as exc:
        if exc.status != 404:
            raise
        return None


async def _status(rest: Rest, claim: Obj, status: Obj) -> Obj:
    meta = _meta(claim)
    body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
    path = RESOURCE_CLAIMS.path(meta["namespace"], meta["name"], "status")
    return await rest.request("PATCH", path, body=body, content_type=MERGE_PATCH)


async def release_claim(
    rest: Rest,
    claim: Obj,
    pod_of: Callable[[Obj], Obj | None],
    *,
    delete_it: bool = True,
    mine: Collection[str] | None = None,
) -> bool:
    """Take one stale claim as far down as it can go now. `pod_of` finds a
    `reservedFor` consumer's pod (None if gone). True once the claim is gone (or, if not
    `delete_it`, a claim of others: once it is deallocated and unprotected).

    With `mine` (the uids of the releasing gang's pods), a claim that pods of other gangs
    share and still use keeps its allocation: only the gang's own pods leave its
    reservedFor (once they are done), and that is the release."""
    status = claim.get("status") or {}
    reserved = status.get("reservedFor") or []
    if mine is not None:
        others = [c for c in reserved if c.get("uid") not in mine]
        if not all(pod_done(pod_of(c)) for c in others):
            if not all(pod_done(pod_of(c)) for c in reserved if c.get("uid") in mine):
                return False
            if len(others) < len(reserved):
                await _status(rest, claim, {"reservedFor": others})
            return True
    if reserved:
        if not all(pod_done(pod_of(c)) for c in reserved):
            return False
        claim = await _status(rest, claim, {"reservedFor": None})
        status = claim.get("status") or {}
    if status.get("allocation"):
        claim = await _status(rest, claim, {"allocation": None})
    meta = _meta(claim)
    finalizers = list(meta.get("finalizers") or ())
    if DELETE_PROTECTION in finalizers:
        finalizers.remove(DELETE_PROTECTION)
        body = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers}}
        path = RESOURCE_CLAIMS.path(meta["namespace"], meta["name"])
        claim = await rest.request("PATCH", path, body=body, content_type=MERGE_PATCH)
        meta = _meta(claim)
    if delete_it and not meta.get("deletionTimestamp"):
        await delete(rest, RESOURCE_CLAIMS.path(meta["namespace"], meta["name"]))
    return True
