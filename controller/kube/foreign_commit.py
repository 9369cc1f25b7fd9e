"""The commit protocol of a foreign gang (see foreign.py for the record and why).

1. Commit point: create the gang's record ConfigMap (or replace a stale one, with its
   resourceVersion). A 409 means another writer got there first: `CommitConflict`.
2. Per claim: the delete-protection finalizer, then allocation and reservedFor (commit.py).
3. Per pod: the binding, once every claim of the gang is done.
Steps 2 and 3 are those of GangJobs, so a repeat after a crash finds its own results.

Eviction, the same way round as a GangJob's release: the pods get the DisruptionTarget
condition, then the commit point, the record replaced by itself marked released (with its
resourceVersion: a 409 means the gang changed), then the tear-down the released record
drives (the decision loop's reconcile), then the record deleted. A broken admission
(`CommitBroken` in steps 2 or 3) is rolled back the same way, its record released with
reason `foreign.BROKEN` and a `retryAt` (loop.py, `_broken_foreign`).
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.engine.reservation import Reservation
from controller.kube import foreign as f
from controller.kube.commit import ClaimStep, CommitConflict
from controller.kube.commit import results as allocated
from controller.kube.foreign import Members
from controller.kube.resources import CONFIG_MAPS
from controller.kube.rest import KubeError, Obj, Rest


async def release_record(
    rest: Rest,
    config_map: Obj,
    written: Obj,
    reason: str,
    why: str,
    retry_at: float | None = None,
) -> Obj:
    """The commit point of an eviction or of a broken admission's roll-back: the record
    marked released (kept until `retry_at`, if given)."""
    meta = config_map["metadata"]
    marked = f.released_record(config_map, written, reason, why, retry_at)
    try:
        return await rest.request(
            "PUT", CONFIG_MAPS.path(meta["namespace"], meta["name"]), body=marked
        )
    except KubeError as exc:
        if exc.status in (404, 409):
            raise CommitConflict(exc.message) from exc
        raise


async def write_record(rest: Rest, manifest: Obj, replacing: bool) -> Obj:
    """The commit point: the record created, or a stale one replaced."""
    meta = manifest["metadata"]
    try:
        if replacing:
            return await rest.request(
                "PUT", CONFIG_MAPS.path(meta["namespace"], meta["name"]), body=manifest
            )
        return await rest.request("POST", CONFIG_MAPS.path(meta["namespace"]), body=manifest)
    except KubeError as exc:
        if exc.status == 409:
            raise CommitConflict(exc.message) from exc
        raise


def plan(
    found: Members, reservation: Reservation, pods: dict[str, Obj], claims: dict[str, Obj]
) -> tuple[list[ClaimStep], list[tuple[Obj, str]]]:
    """The claim steps and bindings still to do for an admitted foreign gang, from the
    cached pods and claims (pods bound already, finished or gone are skipped). A claim a
    pod shares (allocated by another gang, or anyone) gets a step that keeps its
    allocation and adds the pod to its reservedFor, as kube-scheduler does; a pod whose
    shared claim is no longer allocated waits unbound (its devices are no one's now). A
    claim another pod of the gang allocates (`Members.within`) gets a step with that pod's
    devices: of the steps of one claim, the first allocates it, the others join its
    reservedFor."""
    namespace = found.group.namespace
    steps: list[ClaimStep] = []
    bindings: list[tuple[Obj, str]] = []
    devices: dict[str, tuple[Mapping[str, str], ...]] = {}
    """ResourceClaim name -> its devices, as the record allocates them."""
    for placement in reservation.pods:
        name = str(found.pods[(placement.pod_set, placement.index)]["metadata"]["name"])
        for allocation in placement.claims:
            devices[found.claims[(name, allocation.claim)]] = tuple(
                {
                    "request": da.request,
                    "driver": da.device[0],
                    "pool": da.device[1],
                    "device": da.device[2],
                }
                for da in allocation.devices
            )
    shared_by: dict[str, list[str]] = {}
    within_by: dict[str, list[str]] = {}
    for by, names in ((shared_by, found.shared), (within_by, found.within)):
        for (pod_name, _), claim_name in sorted(names.items()):
            by.setdefault(pod_name, []).append(claim_name)
    for placement in reservation.pods:
        recorded = found.pods[(placement.pod_set, placement.index)]
        name = str(recorded["metadata"]["name"])
        pod = pods.get(f"{namespace}/{name}")
        if pod is None or f.finished(pod) or (pod.get("spec") or {}).get("nodeName"):
            continue
        shared = [claims.get(f"{namespace}/{claim}") for claim in shared_by.get(name, ())]
        if not all(c is not None and f.allocated(c) for c in shared):
            continue
        steps += [ClaimStep(c, tuple(allocated(c)), pod, placement.node) for c in shared if c]
        # its own claims, and those another pod of the gang allocates (the same devices)
        objects = [found.claims[(name, a.claim)] for a in placement.claims]
        objects += within_by.get(name, [])
        for obj in objects:
            claim = claims.get(f"{namespace}/{obj}")
            if claim is not None:
                steps.append(ClaimStep(claim, devices[obj], pod, placement.node))
        bindings.append((pod, placement.node))
    return steps, bindings
