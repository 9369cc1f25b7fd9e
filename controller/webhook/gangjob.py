"""GangJob admission: what the CRD schema cannot say.

Checked on CREATE, and on UPDATE when the spec changes other than by `suspend`
(metadata and status writes, like the controller's own finalizer and record, always pass;
so do suspending and resuming, and anything once the job is being deleted):
1. the object reads as a GangJob (the schema's rules again, with their field paths);
2. it is not so large that its admission record could not be stored (every pod is listed
   with its node and devices; the estimate must stay under 1 MiB of the 1.5 MiB etcd
   takes per object);
3. `spec.queueName` names a queue that exists, is a leaf, is not deleted, and whose
   namespaceSelector selects the job's namespace (tenant isolation: 403);
4. every claim template exists in the namespace and asks for DeviceClasses that exist;
5. the job can ever fit (controller/engine/feasibility.py, the engine's own judgement):
   not more than its queue may ever borrow up the tree, not more than the cluster has, no
   pod larger than every node it may use.
Refusing (5) at submission is the point: the engine would otherwise keep the job
pending with that same reason for ever.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from controller.api.errors import PathPart
from controller.api.gangjob import GangJob as GangJobModel
from controller.engine.errors import InvalidInput
from controller.engine.model import AllocationMode, Gang
from controller.kube import translate
from controller.webhook.cluster import Cluster
from controller.webhook.review import (
    FieldError,
    Request,
    Verdict,
    allow,
    forbidden,
    invalid,
    invalid_at,
    not_found,
    refuse,
    schema_errors,
    settled_update,
    too_many,
)

Obj = dict[str, Any]
RECORD_BUDGET = 1024 * 1024
"""Bytes the admission record may take: etcd stores at most 1.5 MiB per object, and the
spec, metadata and conditions need the rest."""
MAX_DEVICES_PER_REQUEST = 32
"""resource.k8s.io/v1 allocates at most 32 devices to one claim (`All` mode included)."""
_PATH_PART = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")


def validate(
    request: Request, cluster: Cluster, namespace_labels: Mapping[str, str] | None
) -> Verdict:
    job = request.object
    if request.operation == "DELETE" or job is None:
        return allow()
    suspended = bool((job.get("spec") or {}).get("suspend"))
    if settled_update(request, ignore=("suspend",)) or (
        suspended and request.operation == "UPDATE" and request.old_object is not None
    ):
        return allow()
    job = _named(job, request)
    errors = schema_errors(GangJobModel.from_manifest, job)
    if errors:
        return refuse(errors)
    errors = _queue(job, request.namespace, cluster, namespace_labels)
    errors += _claims(job, request.namespace, cluster)
    problem, gang = _gang(job, cluster)
    if problem is not None and problem.path not in {e.path for e in errors}:
        errors.append(problem)
    if gang is not None:
        errors += _record_size(gang, cluster)
    if errors:
        return refuse(errors)
    assert gang is not None
    never = cluster.never_fit.reason(cluster.state, gang)
    if never is not None:
        return refuse([_never_fit_error(never, job)])
    return allow()


def _named(job: Obj, request: Request) -> Obj:
    """The job with a name and namespace: a `generateName` job has none before it is stored."""
    meta = dict(job.get("metadata") or {})
    if not meta.get("name"):
        meta["name"] = (meta.get("generateName") or "gangjob-") + "xxxxx"
    meta.setdefault("namespace", request.namespace)
    meta.setdefault("uid", request.uid)
    return {**job, "metadata": meta}


def _gang(job: Obj, cluster: Cluster) -> tuple[FieldError | None, Gang | None]:
    """The job as the engine sees it, or why it cannot be one."""
    try:
        gang = translate.gang(job, cluster.templates, cluster.priorities, cluster.default_priority)
    except InvalidInput as exc:
        return _from_invalid_input(exc, job), None
    return None, gang


def _from_invalid_input(exc: InvalidInput, job: Obj) -> FieldError:
    """The translator's `GangJob ns/name: spec.x[0].y` location as a field path."""
    source = translate.describe("GangJob", job) + ": "
    if exc.where.startswith(source):
        return invalid_at(parse_path(exc.where[len(source) :]), exc.what)
    return invalid_at(("spec",), f"{exc.where}: {exc.what}")


def parse_path(text: str) -> tuple[PathPart, ...]:
    """`spec.podSets[0].template` as parts (the inverse of api.errors.format_path)."""
    parts: list[PathPart] = []
    for name, index in _PATH_PART.findall(text):
        if name:
            parts.append(name)
        else:
            parts.append(int(index) if index.isdigit() else index)
    return tuple(parts)


# ---- size ------------------------------------------------------------------------------
def record_bytes(gang: Gang, cluster: Cluster) -> int:
    """About how large the admission record of `gang` is, as the controller writes it
    (`translate.with_shared_device_fields`): each pod with the cluster's longest node name
    and, per device, its longest device name. A claim's devices are taken to come from one
    pool of one driver, as a node's GPUs do; a claim that mixes pools records each device's
    driver and pool, more than estimated (the half MiB left of etcd's 1.5 MiB covers
    some)."""
    sizes = cluster.sizes.refresh(cluster.state)
    driver, pool, device = sizes.device
    total = 0
    for ps in gang.pod_sets:
        claims = []
        for claim in ps.claims:
            devices = []
            for req in claim.spec.requests:
                for sub in req.alternatives[:1] if len(req.alternatives) == 1 else req.alternatives:
                    count = sub.count if sub.mode is AllocationMode.EXACT_COUNT else 0
                    count = min(count or MAX_DEVICES_PER_REQUEST, MAX_DEVICES_PER_REQUEST)
                    name = sub.name if len(req.alternatives) == 1 else f"{req.name}/{sub.name}"
                    entry = {"request": name, "driver": driver, "pool": pool, "device": device}
                    devices += [entry] * count
            claims.append({"name": claim.name, "devices": devices})
        pod = {"index": ps.count - 1, "node": "x" * sizes.node_name, "claims": claims}
        written = translate.with_shared_device_fields({"podSets": [{"pods": [pod]}]})
        total += ps.count * (
            len(json.dumps(written["podSets"][0]["pods"][0], separators=(",", ":"))) + 1
        )
    return total


def _record_size(gang: Gang, cluster: Cluster) -> list[FieldError]:
    size = record_bytes(gang, cluster)
    if size <= RECORD_BUDGET:
        return []
    pods = gang.pod_count
    return [
        too_many(
            ("spec", "podSets"),
            pods,
            f"pods in one GangJob: its admission record (every pod with its node and "
            f"devices) would take about {size / 2**20:.1f} MiB, over the "
            f"{RECORD_BUDGET // 2**20} MiB that keeps the GangJob under etcd's 1.5 MiB "
            "object limit; use fewer, larger pods or split the work into several GangJobs",
        )
    ]


# ---- queue -----------------------------------------------------------------------------
def _queue(
    job: Obj, namespace: str, cluster: Cluster, labels: Mapping[str, str] | None
) -> list[FieldError]:
    path = ("spec", "queueName")
    name = str((job.get("spec") or {}).get("queueName") or "")
    quota = cluster.state.quota
    blocker = quota.admission_blocker(name)
    if blocker is not None:
        if quota.get(name) is None:
            if name in cluster.queues:
                return [invalid(path, name, f"queue {name} cannot be used: {_refused(name)}")]
            return [
                not_found(
                    path, name, f"no Queue named {name}; {_suggest(cluster, namespace, labels)}"
                )
            ]
        return [invalid(path, name, f"{blocker}; {_suggest(cluster, namespace, labels)}")]
    queue = quota.get(name)
    assert queue is not None
    if labels is None:
        return [not_found(("metadata", "namespace"), namespace, "the namespace does not exist")]
    if queue.namespace_selector is not None and not queue.namespace_selector.matches(labels):
        return [
            forbidden(
                path,
                f"queue {name} does not take GangJobs from namespace {namespace} (its "
                f"namespaceSelector does not match the namespace's labels); "
                f"{_suggest(cluster, namespace, labels)}",
            )
        ]
    return []


def _refused(name: str) -> str:
    return "the controller cannot use it; `kubectl describe queue " + name + "` says why"


def leaf_queues_for(
    cluster: Cluster, namespace: str, labels: Mapping[str, str] | None
) -> list[str]:
    """Leaf queues that admit jobs of `namespace` (sorted)."""
    if labels is None:
        return []
    quota = cluster.state.quota
    found = []
    for name in quota.names():
        queue = quota.get(name)
        if queue is None or quota.admission_blocker(name) is not None:
            continue
        if queue.namespace_selector is None or queue.namespace_selector.matches(labels):
            found.append(name)
    return sorted(found)


def _suggest(cluster: Cluster, namespace: str, labels: Mapping[str, str] | None) -> str:
    usable = leaf_queues_for(cluster, namespace, labels)
    if not usable:
        return f"no queue takes jobs from namespace {namespace}; ask an administrator for one"
    shown = ", ".join(usable[:5]) + (", ..." if len(usable) > 5 else "")
    return f"queues that take jobs from namespace {namespace}: {shown}"


# ---- claims ----------------------------------------------------------------------------
def _claims(job: Obj, namespace: str, cluster: Cluster) -> list[FieldError]:
    errors: list[FieldError] = []
    classes = cluster.state.inventory.classes
    for i, pod_set in enumerate((job.get("spec") or {}).get("podSets") or []):
        spec = ((pod_set or {}).get("template") or {}).get("spec") or {}
        for j, ref in enumerate(spec.get("resourceClaims") or []):
            name = ref.get("resourceClaimTemplateName")
            if not name:
                continue
            path: tuple[PathPart, ...] = (
                "spec",
                "podSets",
                i,
                "template",
                "spec",
                "resourceClaims",
                j,
                "resourceClaimTemplateName",
            )
            template = cluster.templates.get(f"{namespace}/{name}")
            if template is None:
                errors.append(
                    not_found(
                        path,
                        name,
                        f"no ResourceClaimTemplate {name} in namespace {namespace}; "
                        "create it before the GangJob",
                    )
                )
                continue
            for wanted in device_classes(template):
                if wanted not in classes:
                    errors.append(
                        invalid(
                            path,
                            name,
                            f"ResourceClaimTemplate {name} asks for DeviceClass {wanted}, "
                            f"which does not exist (existing: {_listed(classes)})",
                        )
                    )
    return errors


def device_classes(template: Obj) -> list[str]:
    """The DeviceClass names a ResourceClaimTemplate's requests use, in order, once each."""
    devices = (((template.get("spec") or {}).get("spec") or {}).get("devices")) or {}
    found: list[str] = []
    for req in devices.get("requests") or []:
        subs = [req.get("exactly") or {}, *(req.get("firstAvailable") or [])]
        for sub in subs:
            name = (sub or {}).get("deviceClassName")
            if name and name not in found:
                found.append(str(name))
    return found


def _listed(names: Mapping[str, object]) -> str:
    shown = sorted(names)
    if not shown:
        return "none"
    return ", ".join(shown[:5]) + (", ..." if len(shown) > 5 else "")


# ---- never fits ----------------------------------------------------------------------------
def _never_fit_error(reason: str, job: Obj) -> FieldError:
    """Put the engine's reason on the pod set it names, else on all of them."""
    names = [str((ps or {}).get("name")) for ps in (job.get("spec") or {}).get("podSets") or []]
    detail = reason.removeprefix("can never fit: ")
    for i, name in enumerate(names):
        prefix = f"pod set {name}: "
        if detail.startswith(prefix):
            return invalid_at(
                ("spec", "podSets", i),
                f"can never fit: {detail[len(prefix) :]}; the job would wait for ever, so it "
                "is refused now: ask for less, or for more quota or nodes",
            )
    return invalid_at(
        ("spec", "podSets"),
        f"can never fit: {detail}; the job would wait for ever, so it is refused now: "
        "ask for less, or for more quota or nodes",
    )
