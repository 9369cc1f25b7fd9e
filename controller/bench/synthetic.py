"""A seeded synthetic GPU cluster and gang backlog, shaped like a DRA training cluster."""

from __future__ import annotations

import random
from dataclasses import dataclass

from controller.engine.model import (
    ClaimSpec,
    DeviceClass,
    DeviceRequest,
    Gang,
    Node,
    PodClaim,
    PodSet,
    Queue,
    QuotaLimit,
    ResourceSlice,
    Topology,
    TopologyMode,
    Version,
    device_quota_resource,
)
from controller.engine.state import ClusterState

DRIVER = "gpu.example.com"
GPU_CLASS = "gpu.example.com"
GIB = 1024**3
BIG_MEMORY_SELECTOR = f'device.capacity["{DRIVER}"].memory.compareTo(quantity("80Gi")) >= 0'


@dataclass(frozen=True)
class ClusterShape:
    """How big the synthetic cluster and backlog are."""

    nodes: int = 1000
    gpus_per_node: int = 8
    cpu_per_node: int = 64
    memory_gib_per_node: int = 512
    nodes_per_nvlink_domain: int = 16
    parents: int = 2
    leaves_per_parent: int = 5
    gangs: int = 5000
    seed: int = 7


def gpu_nodes(shape: ClusterShape) -> tuple[list[Node], list[ResourceSlice]]:
    """Nodes with one ResourceSlice each; half the GPUs have 80Gi, half 40Gi."""
    nodes, slices = [], []
    for i in range(shape.nodes):
        name = f"node-{i:05d}"
        rack = f"rack-{i // 32:03d}"
        nodes.append(
            Node(
                name,
                {
                    "cpu": shape.cpu_per_node * 1000,
                    "memory": shape.memory_gib_per_node * GIB,
                    "pods": 110,
                },
                labels={"topology.kubernetes.io/rack": rack},
            )
        )
        memory = "80Gi" if i % 2 == 0 else "40Gi"
        nvlink = f"nvl-{i // shape.nodes_per_nvlink_domain:04d}"
        slices.append(
            ResourceSlice.node_local(
                f"{name}-{DRIVER}",
                DRIVER,
                name,
                shape.gpus_per_node,
                {
                    f"{DRIVER}/model": "h100" if memory == "80Gi" else "a100",
                    f"{DRIVER}/nvlinkDomain": nvlink,
                    f"{DRIVER}/driverVersion": Version("550.54.15"),
                },
                {f"{DRIVER}/memory": memory},
            )
        )
    return nodes, slices


def queue_tree(shape: ClusterShape) -> list[Queue]:
    """Parents with no quota of their own; leaves share the cluster's GPUs and may borrow."""
    total_gpus = shape.nodes * shape.gpus_per_node
    leaves = shape.parents * shape.leaves_per_parent
    per_leaf = total_gpus // leaves
    queues = [Queue(f"org-{p}") for p in range(shape.parents)]
    for p in range(shape.parents):
        for q in range(shape.leaves_per_parent):
            queues.append(
                Queue(
                    f"team-{p}-{q}",
                    parent=f"org-{p}",
                    quota={
                        device_quota_resource(GPU_CLASS): QuotaLimit(per_leaf),
                        "cpu": QuotaLimit(shape.nodes * shape.cpu_per_node * 1000 // leaves),
                    },
                )
            )
    return queues


def backlog(shape: ClusterShape) -> list[Gang]:
    """Gangs of 1-64 pods with 1-8 GPUs each via per-pod claims, some with topology."""
    rng = random.Random(shape.seed)
    sizes = [1, 2, 4, 8, 16, 32, 64]
    queues = [f"team-{p}-{q}" for p in range(shape.parents) for q in range(shape.leaves_per_parent)]
    gangs = []
    for i in range(shape.gangs):
        pods = rng.choice(sizes)
        gpus = rng.randint(1, shape.gpus_per_node)
        big = rng.random() < 0.2
        request = DeviceRequest.exactly(
            "gpus", GPU_CLASS, gpus, selectors=(BIG_MEMORY_SELECTOR,) if big else ()
        )
        topology = None
        if pods >= 16 and rng.random() < 0.5:
            topology = Topology(f"{DRIVER}/nvlinkDomain", TopologyMode.PREFERRED, True)
        gangs.append(
            Gang(
                uid=f"gang-{i:05d}",
                name=f"job-{i:05d}",
                namespace="research",
                queue=rng.choice(queues),
                priority=rng.choice([0, 0, 0, 10]),
                created=float(i),
                topology=topology,
                pod_sets=(
                    PodSet(
                        "worker",
                        pods,
                        {"cpu": 6000 * gpus, "memory": 32 * GIB * gpus},
                        claims=(PodClaim("gpu", ClaimSpec((request,))),),
                    ),
                ),
            )
        )
    return gangs


def build_state(shape: ClusterShape) -> ClusterState:
    """The cluster and queues loaded into a fresh state; gangs are added by the caller."""
    state = ClusterState()
    state.upsert_device_class(DeviceClass(GPU_CLASS, (f'device.driver == "{DRIVER}"',)))
    nodes, slices = gpu_nodes(shape)
    for n in nodes:
        state.upsert_node(n)
    for s in slices:
        state.upsert_slice(s)
    for q in queue_tree(shape):
        state.upsert_queue(q)
    return state
