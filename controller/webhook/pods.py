"""Cluster-level quota for pods: no GPU pod in a managed namespace escapes its queue.

A namespace is managed when some leaf Queue takes jobs from it (its namespaceSelector
matches, or it has none). There, a pod that requests extended resources (nvidia.com/gpu
and the like) or DRA claims is Phalanx's to schedule:

- `mutate` (CREATE): a pod headed for the default scheduler gets `schedulerName:
  phalanx`; a Phalanx pod in no gang becomes a one-pod gang (label `phalanx.dev/gang:
  pod.<name>`, annotation `phalanx.dev/gang-size: "1"`); a pod without a queue label gets
  `phalanx.dev/queue` of the namespace's queue. The controller's foreign-gang code
  (controller/kube/foreign.py) then admits it like any gang of other controllers' pods,
  charged to that queue.
- `validate`: on CREATE, refuses what would get around that: a pod that names its node
  (`spec.nodeName`) or another scheduler, or names a queue that does not take jobs from
  its namespace (403, with how to submit instead); on UPDATE, a Phalanx pod whose gang
  label, gang size or queue changes (the pod would leave its gang's quota while it runs).
Exempt: pods of GangJobs (the controller made them: only their scheduler is checked),
mirror pods of static pods (the kubelet's, bound at birth), and unmanaged namespaces.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from controller.kube.foreign import GANG_LABEL, QUEUE_LABEL, SCHEDULER_NAME, SIZE_ANNOTATION
from controller.kube.translate import owner_gang
from controller.webhook import review
from controller.webhook.cluster import Cluster
from controller.webhook.gangjob import leaf_queues_for

Obj = dict[str, Any]
DEFAULT_SCHEDULER = "default-scheduler"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
GANG_PREFIX = "pod."
"""One-pod gangs are named `pod.<pod name>`: apart from gang labels users choose."""
_LABEL_VALUE_MAX = 63
_LABEL_SAFE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
HOW_TO_SUBMIT = (
    "leave spec.schedulerName and spec.nodeName unset (use a nodeSelector to narrow "
    "placement) and Phalanx schedules the pod as a one-pod gang, or submit a GangJob"
)


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Obj) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def is_extended(resource: str) -> bool:
    """An extended resource (nvidia.com/gpu): a domain-prefixed name outside kubernetes.io."""
    domain, slash, _ = resource.partition("/")
    return bool(slash) and not (
        domain == "kubernetes.io"
        or domain.endswith(".kubernetes.io")
        or resource.startswith("requests.")
    )


def needs_devices(pod: Obj) -> bool:
    """Whether the pod requests extended resources or DRA claims."""
    spec = _map(pod.get("spec"))
    if spec.get("resourceClaims"):
        return True
    for field in ("containers", "initContainers"):
        containers = spec.get(field)
        for container in containers if isinstance(containers, list) else ():
            resources = _map(_map(container).get("resources"))
            for amounts in (resources.get("requests"), resources.get("limits")):
                if any(is_extended(str(r)) for r in _map(amounts)):
                    return True
    return False


def _map(value: Any) -> dict[str, Any]:
    """A map from the pod, or an empty one where the pod has something else."""
    return value if isinstance(value, dict) else {}


def in_gang(pod: Obj) -> bool:
    """Whether the pod joins a gang by label or by an upstream PodGroup."""
    group = ((pod.get("spec") or {}).get("schedulingGroup") or {}).get("podGroupName")
    return bool(group) or GANG_LABEL in _labels(pod)


def gang_name(pod: Obj, request_uid: str) -> str:
    """`pod.<name>`, a valid label value; a long or odd name, or a generateName pod (no
    name yet), gets a hash of the name or of the request."""
    meta = _meta(pod)
    name = str(meta.get("name") or "")
    if name and len(GANG_PREFIX) + len(name) <= _LABEL_VALUE_MAX and _LABEL_SAFE.fullmatch(name):
        return GANG_PREFIX + name
    digest = hashlib.sha256((name or request_uid).encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]", "", name or str(meta.get("generateName") or "pod"))
    stem = stem[: _LABEL_VALUE_MAX - len(GANG_PREFIX) - len(digest) - 1].strip("-._")
    return f"{GANG_PREFIX}{stem}-{digest}" if stem else f"{GANG_PREFIX}{digest}"


def namespace_queue(
    cluster: Cluster, namespace: str, labels: Mapping[str, str] | None
) -> tuple[str | None, list[str]]:
    """(the queue a pod of `namespace` is charged to, every leaf queue that takes the
    namespace). One queue that selects the namespace by its namespaceSelector wins over
    catch-all queues without one; None when that does not name exactly one."""
    usable = leaf_queues_for(cluster, namespace, labels)
    quota = cluster.state.quota
    selecting = [
        name
        for name in usable
        if (queue := quota.get(name)) is not None and queue.namespace_selector is not None
    ]
    for candidates in (selecting, usable):
        if len(candidates) == 1:
            return candidates[0], usable
        if candidates:
            return None, usable
    return None, usable


def _exempt(pod: Obj) -> bool:
    return MIRROR_ANNOTATION in (_meta(pod).get("annotations") or {})


# ---- mutation ----------------------------------------------------------------------------
def mutate(
    request: review.Request, cluster: Cluster, labels: Mapping[str, str] | None
) -> review.Verdict:
    pod = request.object
    if request.operation != "CREATE" or pod is None or _exempt(pod) or owner_gang(pod):
        return review.allow()
    spec = pod.get("spec") or {}
    scheduler = spec.get("schedulerName") or DEFAULT_SCHEDULER
    if spec.get("nodeName") or scheduler not in (DEFAULT_SCHEDULER, SCHEDULER_NAME):
        return review.allow()  # a bypass: `validate` refuses it with the reason
    if scheduler != SCHEDULER_NAME and not needs_devices(pod):
        return review.allow()
    usable = leaf_queues_for(cluster, request.namespace, labels)
    if not usable:
        return review.allow()  # not a managed namespace
    queue, _ = namespace_queue(cluster, request.namespace, labels)
    patch: list[Obj] = []
    meta = _meta(pod)
    if scheduler != SCHEDULER_NAME:
        patch.append(
            {"op": "add", "path": review.pointer("spec", "schedulerName"), "value": SCHEDULER_NAME}
        )
    current = _labels(pod)
    wanted: dict[str, str] = {}
    if not in_gang(pod):
        wanted[GANG_LABEL] = gang_name(pod, request.uid)
    if QUEUE_LABEL not in current and queue is not None:
        wanted[QUEUE_LABEL] = queue
    if wanted:
        if meta.get("labels") is None:
            patch.append(
                {"op": "add", "path": review.pointer("metadata", "labels"), "value": wanted}
            )
        else:
            patch += [
                {"op": "add", "path": review.pointer("metadata", "labels", k), "value": v}
                for k, v in wanted.items()
            ]
    if GANG_LABEL in wanted:
        if meta.get("annotations") is None:
            patch.append(
                {
                    "op": "add",
                    "path": review.pointer("metadata", "annotations"),
                    "value": {SIZE_ANNOTATION: "1"},
                }
            )
        else:
            patch.append(
                {
                    "op": "add",
                    "path": review.pointer("metadata", "annotations", SIZE_ANNOTATION),
                    "value": "1",
                }
            )
    warnings = []
    if patch:
        charged = current.get(QUEUE_LABEL) or queue
        warnings.append(
            "scheduled by Phalanx"
            + (" as a one-pod gang" if GANG_LABEL in wanted else "")
            + (f", charged to queue {charged}" if charged else "")
        )
    return review.allow(patch, warnings)


# ---- validation --------------------------------------------------------------------------
def validate(
    request: review.Request, cluster: Cluster, labels: Mapping[str, str] | None
) -> review.Verdict:
    pod = request.object
    if pod is None or _exempt(pod):
        return review.allow()
    if request.operation == "UPDATE" and request.old_object is not None:
        return _update(pod, request.old_object)
    if request.operation != "CREATE":
        return review.allow()
    spec = pod.get("spec") or {}
    scheduler = spec.get("schedulerName") or DEFAULT_SCHEDULER
    if owner_gang(pod):
        if scheduler != SCHEDULER_NAME:
            return review.refuse(
                [
                    review.forbidden(
                        ("spec", "schedulerName"),
                        f"a pod of a GangJob is scheduled by {SCHEDULER_NAME}; the GangJob's "
                        "controller creates its pods, do not make them yourself",
                    )
                ]
            )
        return review.allow()
    devices = needs_devices(pod)
    if not (devices or scheduler == SCHEDULER_NAME):
        return review.allow()
    usable = leaf_queues_for(cluster, request.namespace, labels)
    if not usable:
        return review.allow()  # not a managed namespace
    errors: list[review.FieldError] = []
    what = "a pod that requests GPUs or DRA devices" if devices else "a Phalanx pod"
    if spec.get("nodeName"):
        errors.append(
            review.forbidden(
                ("spec", "nodeName"),
                f"{what} in namespace {request.namespace} may not choose its node: Phalanx "
                f"places it within its queue's quota; {HOW_TO_SUBMIT}",
            )
        )
    if scheduler not in (SCHEDULER_NAME, DEFAULT_SCHEDULER) or (
        scheduler == DEFAULT_SCHEDULER and not spec.get("nodeName")
    ):
        errors.append(
            review.forbidden(
                ("spec", "schedulerName"),
                f"pods that request GPUs or DRA devices in namespace {request.namespace} are "
                f"scheduled by {SCHEDULER_NAME}, not {scheduler}; {HOW_TO_SUBMIT}",
            )
        )
    if scheduler == SCHEDULER_NAME:
        errors += _queue_label(pod, request.namespace, cluster, labels, usable)
        errors += _gang_size(pod)
    return review.refuse(errors) if errors else review.allow()


def _queue_label(
    pod: Obj,
    namespace: str,
    cluster: Cluster,
    labels: Mapping[str, str] | None,
    usable: list[str],
) -> list[review.FieldError]:
    path = ("metadata", "labels", QUEUE_LABEL)
    name = _labels(pod).get(QUEUE_LABEL)
    shown = ", ".join(usable[:5]) + (", ..." if len(usable) > 5 else "")
    if name is None:
        if namespace_queue(cluster, namespace, labels)[0] is None:
            return [
                review.required(
                    path,
                    f"queues {shown} take pods from namespace {namespace}: "
                    f"label the pod {QUEUE_LABEL}=<one of them>",
                )
            ]
        return []
    if name in usable:
        return []
    quota = cluster.state.quota
    if quota.get(name) is None:
        return [
            review.not_found(
                path, name, f"no Queue named {name}; queues for namespace {namespace}: {shown}"
            )
        ]
    blocker = quota.admission_blocker(name)
    if blocker is not None:
        return [review.invalid(path, name, f"{blocker}; queues for namespace {namespace}: {shown}")]
    return [
        review.forbidden(
            path,
            f"queue {name} does not take pods from namespace {namespace} (its "
            f"namespaceSelector does not match); queues that do: {shown}",
        )
    ]


def _gang_size(pod: Obj) -> list[review.FieldError]:
    if GANG_LABEL not in _labels(pod):
        return []
    value = (_meta(pod).get("annotations") or {}).get(SIZE_ANNOTATION)
    path = ("metadata", "annotations", SIZE_ANNOTATION)
    if value is None:
        return [review.required(path, 'the number of pods in the gang, e.g. "4"')]
    if not str(value).isdigit() or int(str(value)) < 1:
        return [
            review.invalid(
                path, value, "must be a positive integer: the number of pods in the gang"
            )
        ]
    return []


def _update(pod: Obj, old: Obj) -> review.Verdict:
    """A Phalanx pod keeps its gang label, gang size and queue for life."""
    if ((old.get("spec") or {}).get("schedulerName")) != SCHEDULER_NAME:
        return review.allow()
    before, after = _labels(old), _labels(pod)
    size_before = (_meta(old).get("annotations") or {}).get(SIZE_ANNOTATION)
    size_after = (_meta(pod).get("annotations") or {}).get(SIZE_ANNOTATION)
    how = (
        "the gang labels of a pod scheduled by Phalanx cannot change once it exists (it "
        "would leave its gang's quota while it runs); delete the pod and create it again"
    )
    errors = [
        review.forbidden(("metadata", "labels", key), how)
        for key in (GANG_LABEL, QUEUE_LABEL)
        if before.get(key) != after.get(key)
    ]
    if size_before != size_after:
        errors.append(review.forbidden(("metadata", "annotations", SIZE_ANNOTATION), how))
    return review.refuse(errors) if errors else review.allow()
