"""Clusters and admission requests for the webhook's rule tests (no HTTP).

`cluster_of` builds the `Cluster` the rules read from API objects, through the same
translation the controller's caches use; the object builders are the kube tests' own.
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from typing import Any

from controller.engine.errors import InvalidInput
from controller.engine.state import ClusterState
from controller.kube import translate
from controller.webhook.cluster import Cluster
from controller.webhook.review import Request
from tests.kube.controller_cluster import (
    gang_job,
    gpu_class,
    gpu_slice,
    one_gpu_template,
    one_slot_node,
    queue,
)

Obj = dict[str, Any]

__all__ = [
    "cluster_of",
    "gang_job",
    "gpu_class",
    "gpu_slice",
    "namespace",
    "one_gpu_template",
    "one_slot_node",
    "pod",
    "queue",
    "request",
    "small_cluster",
]


def namespace(name: str, **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}},
    }


def cluster_of(*objects: Obj) -> Cluster:
    """A Cluster holding these namespaces, nodes, DRA objects, queues and templates."""
    state = ClusterState()
    queues: dict[str, Obj] = {}
    templates: dict[str, Obj] = {}
    for obj in objects:
        kind, meta = obj["kind"], obj["metadata"]
        if kind == "Namespace":
            state.set_namespace(*translate.namespace_labels(obj))
        elif kind == "Node":
            state.upsert_node(translate.node(obj))
        elif kind == "DeviceClass":
            state.upsert_device_class(translate.device_class(obj))
        elif kind == "ResourceSlice":
            state.upsert_slice(translate.resource_slice(obj))
        elif kind == "ResourceClaimTemplate":
            templates[f"{meta['namespace']}/{meta['name']}"] = obj
        elif kind == "Queue":
            queues[meta["name"]] = obj
        else:
            raise ValueError(f"cluster_of does not take {kind}")
    for obj in queues.values():
        with contextlib.suppress(InvalidInput):  # as the caches: the engine refuses it
            state.upsert_queue(translate.queue(obj))
    return Cluster(state, queues, templates)


def small_cluster(*extra: Obj) -> Cluster:
    """Namespace default and team-a/team-b, two 8-cpu nodes with 4 GPUs each, a leaf queue
    `q` for everyone (cpu 10) and per-team leaves under `teams`."""
    team_a = queue("team-a", cpu="8")
    team_a["spec"] |= {"parent": "teams", "namespaceSelector": {"matchLabels": {"team": "a"}}}
    team_b = queue("team-b", cpu="8")
    team_b["spec"] |= {"parent": "teams", "namespaceSelector": {"matchLabels": {"team": "b"}}}
    return cluster_of(
        namespace("default"),
        namespace("team-a", team="a"),
        namespace("team-b", team="b"),
        one_slot_node("n0", pods=110),
        one_slot_node("n1", pods=110),
        gpu_class(),
        gpu_slice("n0", 4),
        gpu_slice("n1", 4),
        one_gpu_template(),
        queue("q", cpu="10"),
        queue("teams", cpu="16"),
        team_a,
        team_b,
        *extra,
    )


def request(
    obj: Obj | None,
    operation: str = "CREATE",
    old: Obj | None = None,
    *,
    namespace: str | None = None,
) -> Request:
    """The AdmissionRequest the API server would send for this object."""
    subject = obj if obj is not None else old
    assert subject is not None
    meta = subject.get("metadata") or {}
    group, _, version = str(subject.get("apiVersion", "v1")).rpartition("/")
    kind = str(subject["kind"])
    return Request(
        uid=str(uuid.uuid4()),
        operation=operation,
        group=group,
        version=version,
        kind=kind,
        resource=kind.lower() + "s",
        sub_resource="",
        name=str(meta.get("name") or ""),
        namespace=str(namespace if namespace is not None else meta.get("namespace") or ""),
        object=copy.deepcopy(obj),
        old_object=copy.deepcopy(old),
    )


def pod(
    name: str = "p",
    namespace: str = "default",
    *,
    gpus: int = 0,
    claim: bool = False,
    scheduler: str = "default-scheduler",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> Obj:
    """A pod as the API server has it after defaulting (schedulerName set)."""
    resources: Obj = {"requests": {"cpu": "100m"}}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    body: Obj = {
        "schedulerName": scheduler,
        "containers": [{"name": "c", "image": "i", "resources": resources}],
        **spec,
    }
    if claim:
        body["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]
    meta: Obj = {"name": name, "namespace": namespace}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}
