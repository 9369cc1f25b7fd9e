"""The controller's largest writes, built as the controller builds them: the admission
record of a big GangJob (its `status.admission`) and the record ConfigMap of a big foreign
gang, for pods of one claim each on nodes of their own.

Names have the lengths a real cluster gives them (GKE-like node names of 41 characters,
per-node DRA pools named after the node, pod names of a JobSet-like controller, claims
named by the resourceclaim controller), since the bytes are mostly names.

`python -m tests.kube.big_records` prints the sizes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from controller.api.gangjob import MAX_POD_SETS, MAX_REPLICAS
from controller.engine.reservation import (
    ClaimAllocation,
    DeviceAllocation,
    PodPlacement,
    Reservation,
)
from controller.engine.state import ClusterState
from controller.kube import foreign as f
from controller.kube import translate
from controller.kube.record_size import RecordSizes
from controller.kube.translate import admission_record, with_shared_device_fields
from controller.webhook.cluster import Cluster
from controller.webhook.gangjob import RECORD_BUDGET, record_bytes

Obj = dict[str, Any]
NAMESPACE = "ml-training"
GANG = "llama-pretrain"
POD_SET = "worker"
DRIVER = "gpu.nvidia.com"
SIZES = ((2048, 1), (2048, 8), (4096, 8))
"""(pods, devices per pod) measured by `main`."""


def node(i: int) -> str:
    return f"gke-prod-a3-highgpu-8g-4f2c9e1b-{i:08d}"


def pod_sets(pods: int) -> list[tuple[str, int]]:
    """A GangJob's pod sets for `pods` pods: as few as the CRD allows (4,096 pods each)."""
    whole, rest = divmod(pods, MAX_REPLICAS)
    counts = [MAX_REPLICAS] * whole + ([rest] if rest else [])
    return [(f"{POD_SET}-{k}", count) for k, count in enumerate(counts)]


def reservation(pods: int, devices: int, sets: list[tuple[str, int]] | None = None) -> Reservation:
    """`pods` pods (in `sets`, by default `pod_sets`), each on a node of its own with one
    claim `gpu` of `devices` devices."""
    placed = []
    for name, count in sets or pod_sets(pods):
        for index in range(count):
            i = len(placed)
            allocations = tuple(
                DeviceAllocation("gpu", (DRIVER, node(i), f"gpu-{d}"), "gpu")
                for d in range(devices)
            )
            placed.append(
                PodPlacement(
                    name,
                    index,
                    node(i),
                    {"cpu": 1000, "pods": 1},
                    (ClaimAllocation("gpu", allocations),),
                )
            )
    return Reservation.placed(
        f"uid-{GANG}", "team-a", tuple(placed), {"cpu": 1000 * pods, "devices/gpu": pods * devices}
    )


def template(devices: int) -> Obj:
    """The ResourceClaimTemplate of one claim of `devices` GPUs."""
    exactly: Obj = {"deviceClassName": "gpu"}
    if devices != 1:
        exactly |= {"allocationMode": "ExactCount", "count": devices}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": f"gpu-x{devices}", "namespace": NAMESPACE},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}},
    }


def gang_job(pods: int, devices: int) -> Obj:
    """A GangJob of `pods` pods (`pod_sets`), each claiming `devices` GPUs."""
    pod_spec = {
        "containers": [{"name": "train", "image": "trainer", "resources": {}}],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": f"gpu-x{devices}"}],
    }
    return {
        "apiVersion": "phalanx.dev/v1alpha1",
        "kind": "GangJob",
        "metadata": {"name": GANG, "namespace": NAMESPACE},
        "spec": {
            "queueName": "team-a",
            "podSets": [
                {"name": name, "replicas": count, "template": {"spec": pod_spec}}
                for name, count in pod_sets(pods)
            ],
        },
    }


def gang_job_record(pods: int, devices: int) -> Obj:
    """The `status.admission` the controller writes for it."""
    return with_shared_device_fields(admission_record(reservation(pods, devices), "a" * 16))


def webhook_cluster(devices: int) -> Cluster:
    """What the admission webhook knows of a cluster of such nodes: for the record size
    estimate, the longest node name and device (a node of eight GPUs is enough)."""
    state = ClusterState()
    state.upsert_node(
        translate.node({"metadata": {"name": node(0)}, "status": {"allocatable": {"pods": "110"}}})
    )
    state.upsert_slice(
        translate.resource_slice(
            {
                "metadata": {"name": f"{node(0)}-gpus"},
                "spec": {
                    "driver": DRIVER,
                    "nodeName": node(0),
                    "pool": {"name": node(0), "generation": 1, "resourceSliceCount": 1},
                    "devices": [{"name": f"gpu-{d}"} for d in range(8)],
                },
            }
        )
    )
    return Cluster(state, {}, {f"{NAMESPACE}/gpu-x{devices}": template(devices)})


def largest_gang_job(devices: int) -> int:
    """The most pods (`devices` GPUs each) a GangJob may have: the CRD's bounds (16 pod
    sets of 4,096), and the webhook's, whose estimate of the admission record must stay
    within `RECORD_BUDGET` (the webhook refuses the job otherwise)."""
    cluster = webhook_cluster(devices)

    def allowed(pods: int) -> bool:
        job = gang_job(pods, devices)
        job["metadata"]["uid"] = "u"
        gang = translate.gang(job, cluster.templates, {})
        return record_bytes(gang, cluster) <= RECORD_BUDGET

    low, high = 1, MAX_POD_SETS * MAX_REPLICAS
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if allowed(middle) else (low, middle - 1)
    return low


def foreign_members(pods: int, devices: int) -> f.Members:
    """A foreign gang (label `phalanx.dev/gang`) of `pods` pods as the caches see it."""
    claims: dict[str, Obj] = {}
    made = []
    spec = {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}}
    if devices > 1:
        spec["devices"]["requests"][0]["exactly"].update(allocationMode="ExactCount", count=devices)
    for i in range(pods):
        name = f"{GANG}-workers-0-{i}-x7k2q"
        claim = f"{name}-gpu-b4z9m"
        claims[f"{NAMESPACE}/{claim}"] = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": claim, "namespace": NAMESPACE},
            "spec": spec,
        }
        made.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "uid": str(uuid.UUID(int=i + 1, version=4)),
                    "creationTimestamp": "2026-12-01T00:00:00Z",
                    "labels": {f.GANG_LABEL: GANG, f.QUEUE_LABEL: "team-a"},
                    "annotations": {f.SIZE_ANNOTATION: str(pods)},
                },
                "spec": {
                    "schedulerName": f.SCHEDULER_NAME,
                    "containers": [{"name": "train", "image": "trainer"}],
                    "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}],
                },
            }
        )
    group = f.Group(NAMESPACE, f.LABEL, GANG)
    return f.members(group, made, claims, queue="team-a", priority=0)


def foreign_record(pods: int, devices: int) -> tuple[Obj, Obj]:
    """(the written record, the ConfigMap holding it) the controller makes for it."""
    found = foreign_members(pods, devices)
    written = f.record(found, reservation(pods, devices, [("set0", pods)]), "a" * 16)
    return written, f.record_object(found, written, None, None)


def foreign_cluster(nodes: int) -> ClusterState:
    """What the controller knows of a cluster of `nodes` such nodes of eight GPUs each
    (for the foreign record's size estimate, which counts nodes and reads names)."""
    state = ClusterState()
    for i in range(nodes):
        name = node(i)
        status = {"allocatable": {"pods": "110"}}
        state.upsert_node(translate.node({"metadata": {"name": name}, "status": status}))
        pool = {"name": name, "generation": 1, "resourceSliceCount": 1}
        spec = {
            "driver": DRIVER,
            "nodeName": name,
            "pool": pool,
            "devices": [{"name": f"gpu-{d}"} for d in range(8)],
        }
        state.upsert_slice(translate.resource_slice({"metadata": {"name": name}, "spec": spec}))
    return state


def largest_foreign_gang(devices: int, state: ClusterState) -> int:
    """The most pods (`devices` GPUs each) a foreign gang may have before the controller
    refuses it as too large to record, on the cluster `state`."""
    sizes = RecordSizes()

    def allowed(pods: int) -> bool:
        return sizes.too_large(foreign_members(pods, devices), None, state) is None

    low, high = 1, 8192
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if allowed(middle) else (low, middle - 1)
    return low


def compact(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


def main() -> None:
    print("pods devices/pod | GangJob status.admission: full -> written | foreign record")
    print("  ConfigMap data: plain JSON -> written, whole ConfigMap as written (bytes)")
    for pods, devices in SIZES:
        full = compact(admission_record(reservation(pods, devices), "a" * 16))
        written_job = compact(gang_job_record(pods, devices))
        written, config_map = foreign_record(pods, devices)
        plain = len(json.dumps(written, sort_keys=True))
        packed = sum(len(v) for v in config_map["data"].values())
        print(
            f"{pods:5} {devices:2} | {full:9,} -> {written_job:9,} | "
            f"{plain:9,} -> {packed:9,}, {compact(config_map):9,}"
        )
    state = foreign_cluster(8192)
    for devices in (1, 8):
        pods = largest_foreign_gang(devices, state)
        print(
            f"largest foreign gang the controller records, {devices} GPU(s) a pod: {pods:,} "
            f"pods, record ConfigMap {compact(foreign_record(pods, devices)[1]):,} bytes"
        )
    for devices in (1, 8):
        pods = largest_gang_job(devices)
        print(
            f"largest GangJob the webhook admits, {devices} GPU(s) a pod: {pods:,} pods, "
            f"record written {compact(gang_job_record(pods, devices)):,} bytes"
        )


if __name__ == "__main__":
    main()
