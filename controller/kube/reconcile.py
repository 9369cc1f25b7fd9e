"""What a GangJob's objects should look like: pods, claims, the headless Service, status
conditions and Events. Pure functions over plain dicts; the loop (loop.py) does the I/O.

Names are deterministic (`<job>-<podset>-<index>` for pods, `<pod>-<claim>` for claims),
so every create is idempotent: a repeat finds its own object (409 AlreadyExists). Pods
and claims carry the admission id they were made for; objects of an earlier admission of
the same job are stale and are torn down before their names are used again.

The torchrun environment: pods are ranked in pod-set order, then by index; pod 0 is the
master, reachable at its stable DNS name `<pod>.<service>.<namespace>.svc` through the
headless Service (pod hostname + subdomain). LOCAL_WORLD_SIZE is the number of devices
the admission gives the pod (at least 1: one process per device), WORLD_SIZE their sum
over the gang, RANK the global rank of the pod's first process, NODE_RANK the pod's rank.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller.api.common import API_VERSION, SCHEDULER_NAME
from controller.jsonio import clone
from controller.kube.commit import DELETE_PROTECTION
from controller.kube.rest import Obj
from controller.kube.translate import ADMISSION_ANNOTATION, GANG_JOB_KIND, recorded_devices

GANG_LABEL = "phalanx.dev/gang"
QUEUE_LABEL = "phalanx.dev/queue"
POD_SET_LABEL = "phalanx.dev/pod-set"
POD_INDEX_LABEL = "phalanx.dev/pod-index"
JOB_FINALIZER = "phalanx.dev/release"
"""On every GangJob once admitted: it is deleted only after all it held is released."""
DEFAULT_MASTER_PORT = 29500
CONTROLLER_NAME = "phalanx.dev/controller"

QUEUED, ADMITTED, RUNNING, SUCCEEDED, FAILED, PREEMPTED, EVICTED = (
    "Queued",
    "Admitted",
    "Running",
    "Succeeded",
    "Failed",
    "Preempted",
    "Evicted",
)
PODS_READY = "PodsReady"
"""Set True once every pod of a job with `readyTimeoutSeconds` has been Ready (so a new
leader knows its readiness timeout no longer runs); False again when it is released."""
PREEMPTION_BY_SCHEDULER = "PreemptionByScheduler"
"""DisruptionTarget reasons: Kubernetes' own for a scheduler's preemption, ours (prefixed,
UpperCamelCase, as the conventions ask of a controller's own reasons) for the other
evictions of a whole gang: a node lost, not Ready in time, the job suspended, and the
gang stopped because one of its pods failed (restarted whole, or failed for good)."""
NODE_LOST, READY_TIMEOUT = "PhalanxNodeLost", "PhalanxReadyTimeout"
SUSPENDED, GANG_MEMBER_FAILED = "PhalanxSuspended", "PhalanxGangMemberFailed"


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


def pod_name(job: str, pod_set: str, index: int) -> str:
    return f"{job}-{pod_set}-{index}"


def claim_name(pod: str, claim: str) -> str:
    return f"{pod}-{claim}"


def owner_reference(job: Obj) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": GANG_JOB_KIND,
        "name": _meta(job)["name"],
        "uid": _meta(job)["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def service(job: Obj) -> Obj:
    """The headless Service giving every pod a stable DNS name (before it is Ready too,
    since rendezvous happens before readiness)."""
    name, namespace = _meta(job)["name"], _meta(job)["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {GANG_LABEL: name},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {GANG_LABEL: name},
            "publishNotReadyAddresses": True,
        },
    }


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """One claim of one pod: the object to create and the devices the record gives it."""

    manifest: Obj
    results: tuple[Mapping[str, str], ...]


@dataclass(frozen=True, slots=True)
class PodPlan:
    """One pod of the admission: its manifest, node and claims."""

    manifest: Obj
    node: str
    claims: tuple[ClaimPlan, ...]

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


class CannotMaterialise(Exception):
    """The record cannot be turned into objects (a template gone): roll it back."""


def _env(container: Obj, values: Mapping[str, str]) -> Obj:
    """The container with our variables added; a variable the user set is kept."""
    env = list(container.get("env") or ())
    have = {e.get("name") for e in env}
    env.extend({"name": k, "value": v} for k, v in values.items() if k not in have)
    return {**container, "env": env}


def master_port(job: Obj) -> int:
    return int((job.get("spec") or {}).get("masterPort") or DEFAULT_MASTER_PORT)


def plan(job: Obj, templates: Mapping[str, Obj]) -> list[PodPlan]:
    """Every pod and claim the job's recorded admission needs, in rank order.
    `templates` are ResourceClaimTemplates by `namespace/name`."""
    meta, spec = _meta(job), job.get("spec") or {}
    record = (job.get("status") or {})["admission"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    admission = str(record["admissionId"])
    placed = {
        (str(ps["name"]), int(p["index"])): p
        for ps in record.get("podSets") or ()
        for p in ps.get("pods") or ()
    }
    ranked = [
        (ps, i, placed[(ps["name"], i)])
        for ps in spec.get("podSets") or ()
        for i in range(int(ps["replicas"]))
    ]
    local = [
        max(1, sum(len(c.get("devices") or ()) for c in p.get("claims") or ())) for *_, p in ranked
    ]
    world = sum(local)
    master = pod_name(name, ranked[0][0]["name"], 0)
    first_rank = 0
    plans = []
    for rank, (ps, index, placement) in enumerate(ranked):
        pod = pod_name(name, ps["name"], index)
        env = {
            "MASTER_ADDR": f"{master}.{name}.{namespace}.svc",
            "MASTER_PORT": str(master_port(job)),
            "WORLD_SIZE": str(world),
            "RANK": str(first_rank),
            "NODE_RANK": str(rank),
            "NNODES": str(len(ranked)),
            "LOCAL_WORLD_SIZE": str(local[rank]),
            "PHALANX_JOB_NAME": name,
            "PHALANX_NAMESPACE": namespace,
            "PHALANX_QUEUE": str(spec.get("queueName", "")),
            "PHALANX_POD_SET": str(ps["name"]),
            "PHALANX_POD_INDEX": str(index),
            "PHALANX_ADMISSION_ID": admission,
        }
        first_rank += local[rank]
        recorded = {str(c["name"]): c for c in placement.get("claims") or ()}
        claims = []
        pod_claims = []
        for rc in (ps["template"].get("spec") or {}).get("resourceClaims") or ():
            key = f"{namespace}/{rc.get('resourceClaimTemplateName')}"
            template = templates.get(key)
            if template is None:
                raise CannotMaterialise(f"ResourceClaimTemplate {key} does not exist")
            cname = claim_name(pod, str(rc["name"]))
            pod_claims.append({"name": rc["name"], "resourceClaimName": cname})
            results = tuple(
                {k: str(d[k]) for k in ("request", "driver", "pool", "device")}
                for d in recorded_devices(recorded.get(str(rc["name"]), {}))
            )
            claims.append(ClaimPlan(_claim(job, cname, pod, admission, template), results))
        plans.append(
            PodPlan(
                _pod(job, ps, index, pod, admission, env, pod_claims),
                str(placement["node"]),
                tuple(claims),
            )
        )
    return plans


def _labels(job: Obj, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    name = str(_meta(job)["name"])
    queue = str((job.get("spec") or {}).get("queueName", ""))
    return {GANG_LABEL: name, QUEUE_LABEL: queue, **(extra or {})}


def _claim(job: Obj, name: str, pod: str, admission: str, template: Obj) -> Obj:
    tmeta = (template.get("spec") or {}).get("metadata") or {}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {
            "name": name,
            "namespace": _meta(job)["namespace"],
            "labels": {**(tmeta.get("labels") or {}), **_labels(job)},
            "annotations": {
                **(tmeta.get("annotations") or {}),
                ADMISSION_ANNOTATION: admission,
                "resource.kubernetes.io/pod-claim-name": pod,
            },
            "ownerReferences": [owner_reference(job)],
            "finalizers": [DELETE_PROTECTION],
        },
        "spec": clone((template.get("spec") or {}).get("spec") or {}),
    }


def _pod(
    job: Obj,
    pod_set: Obj,
    index: int,
    name: str,
    admission: str,
    env: Mapping[str, str],
    claims: list[Obj],
) -> Obj:
    template = pod_set["template"]
    tmeta = template.get("metadata") or {}
    spec = clone(template.get("spec") or {})
    spec["schedulerName"] = SCHEDULER_NAME
    spec["hostname"] = name
    spec["subdomain"] = _meta(job)["name"]
    spec.setdefault("restartPolicy", "Never")
    if claims:
        spec["resourceClaims"] = claims
    for field in ("containers", "initContainers"):
        if spec.get(field):
            spec[field] = [_env(c, env) for c in spec[field]]
    labels = _labels(job, {POD_SET_LABEL: str(pod_set["name"]), POD_INDEX_LABEL: str(index)})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": _meta(job)["namespace"],
            "labels": {**(tmeta.get("labels") or {}), **labels},
            "annotations": {**(tmeta.get("annotations") or {}), ADMISSION_ANNOTATION: admission},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": spec,
    }


# ---- pods ----------------------------------------------------------------------------------
def pod_phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def pod_ready(pod: Obj) -> bool:
    """Ready (condition Ready True), or already finished successfully."""
    if pod_phase(pod) == "Succeeded":
        return True
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_ready(node: Obj) -> bool:
    """A node whose Ready condition is True (a node without one is taken as ready)."""
    conditions = (node.get("status") or {}).get("conditions") or ()
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), "True")
    return ready == "True"


def requeue_delay(count: int, base: float, cap: float) -> float:
    """Capped exponential backoff after the `count`th readiness timeout in a row."""
    return float(min(cap, base * 2 ** min(count - 1, 62)))


def pod_done(pod: Obj | None) -> bool:
    """A pod that no longer needs its claims: gone, finished, or deleted before binding."""
    if pod is None:
        return True
    if pod_phase(pod) in ("Succeeded", "Failed"):
        return True
    return bool(_meta(pod).get("deletionTimestamp")) and not (pod.get("spec") or {}).get("nodeName")


# ---- status --------------------------------------------------------------------------------
def seconds(text: str) -> float:
    """A metav1.Time (RFC 3339) as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def created(obj: Obj) -> float:
    return seconds(str(_meta(obj).get("creationTimestamp")))


def condition_since(obj: Obj, kind: str, status: str = "True") -> float | None:
    """When the object's condition `kind` last moved to `status` (its lastTransitionTime),
    or None if it is not in that status or the time is not recorded (or unreadable)."""
    for c in (obj.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind:
            if c.get("status") != status or not c.get("lastTransitionTime"):
                return None
            try:
                return seconds(str(c["lastTransitionTime"]))
            except ValueError:
                return None
    return None


def requeue_at(job: Obj) -> float | None:
    """When a job backing off after a readiness timeout may be admitted again."""
    at = ((job.get("status") or {}).get("requeueState") or {}).get("requeueAt")
    return seconds(str(at)) if at else None


def queued_since(job: Obj) -> float:
    """When the job was last queued: its Queued condition's lastTransitionTime while it is
    True, else (admitted before it was ever marked Queued) its creation."""
    for c in (job.get("status") or {}).get("conditions") or ():
        if c.get("type") == QUEUED and c.get("status") == "True" and c.get("lastTransitionTime"):
            return seconds(str(c["lastTransitionTime"]))
    return created(job)


def now_time(now: datetime | None = None) -> str:
    """metav1.Time: RFC 3339 in UTC, whole seconds."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(now: datetime | None = None) -> str:
    """metav1.MicroTime: exactly six fraction digits (the API server refuses others)."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Transition:
    """A condition to set; it becomes an Event when its status changes."""

    type: str
    status: bool
    reason: str
    message: str = ""
    warning: bool = False


def with_conditions(
    job: Obj, transitions: list[Transition], now: str
) -> tuple[list[Obj], list[Transition]]:
    """The job's conditions after `transitions` (Kubernetes conventions: one per type,
    lastTransitionTime moves only when the status does), and those whose status changed."""
    generation = _meta(job).get("generation")
    conditions = [dict(c) for c in (job.get("status") or {}).get("conditions") or ()]
    by_type = {c.get("type"): c for c in conditions}
    changed = []
    for t in transitions:
        status = "True" if t.status else "False"
        old = by_type.get(t.type)
        if old is not None and old.get("status") == status:
            old.update(reason=t.reason, message=t.message)
            if generation is not None:
                old["observedGeneration"] = generation
            continue
        new = {
            "type": t.type,
            "status": status,
            "reason": t.reason,
            "message": t.message,
            "lastTransitionTime": now,
        }
        if generation is not None:
            new["observedGeneration"] = generation
        if old is not None:
            conditions[conditions.index(old)] = new
        else:
            conditions.append(new)
        by_type[t.type] = new
        if t.status or old is not None:
            changed.append(t)
    return conditions, changed


def event(
    job: Obj,
    t: Transition,
    instance: str,
    now: datetime | None = None,
    regarding: tuple[str, str] = (API_VERSION, GANG_JOB_KIND),
) -> Obj:
    """An events.k8s.io/v1 Event about the job for one transition (or about another
    object, of `regarding` (apiVersion, kind): a foreign gang's pod or PodGroup)."""
    meta = _meta(job)
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "eventTime": micro_time(now),
        "reportingController": CONTROLLER_NAME,
        "reportingInstance": instance,
        "action": t.type if t.status else f"Not{t.type}",
        "reason": t.reason,
        "note": t.message[:1024],
        "type": "Warning" if t.warning else "Normal",
        "regarding": {
            "apiVersion": regarding[0],
            "kind": regarding[1],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
    }
