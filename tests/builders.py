"""Small builders for engine tests: readable one-liners for nodes, devices, gangs, queues."""

from __future__ import annotations

from controller.engine.cycle import Engine
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
)
from controller.engine.state import ClusterState

DRIVER = "gpu.example.com"
GPU = "gpu"
GIB = 1024**3


def node(name: str, cpu: int = 64, memory_gib: int = 512, pods: int = 110, **labels: str) -> Node:
    return Node(
        name,
        {"cpu": cpu * 1000, "memory": memory_gib * GIB, "pods": pods},
        labels={k.replace("__", "/"): v for k, v in labels.items()},
    )


def gpu_slice(
    node_name: str, count: int = 8, memory: str = "80Gi", domain: str = "nvl-0", model: str = "h100"
) -> ResourceSlice:
    return ResourceSlice.node_local(
        f"{node_name}-gpus",
        DRIVER,
        node_name,
        count,
        {f"{DRIVER}/model": model, f"{DRIVER}/nvlinkDomain": domain},
        {f"{DRIVER}/memory": memory},
    )


def gpu_claim(count: int = 1, selectors: tuple[str, ...] = (), name: str = "gpu") -> PodClaim:
    return PodClaim(name, ClaimSpec((DeviceRequest.exactly("gpus", GPU, count, selectors),)))


def pod_set(
    pods: int,
    gpus: int = 0,
    cpu: int = 1,
    name: str = "worker",
    claims: tuple[PodClaim, ...] | None = None,
    **kw: object,
) -> PodSet:
    if claims is None:
        claims = (gpu_claim(gpus),) if gpus else ()
    return PodSet(name, pods, {"cpu": cpu * 1000, "memory": GIB}, claims=claims, **kw)  # type: ignore[arg-type]


def gang(
    uid: str,
    pods: int = 1,
    gpus: int = 0,
    queue: str = "team-a",
    priority: int = 0,
    created: float = 0.0,
    topology: Topology | None = None,
    pod_sets: tuple[PodSet, ...] | None = None,
    namespace: str = "default",
    cpu: int = 1,
) -> Gang:
    return Gang(
        uid=uid,
        name=uid,
        namespace=namespace,
        queue=queue,
        priority=priority,
        created=created,
        topology=topology,
        pod_sets=pod_sets or (pod_set(pods, gpus, cpu),),
    )


def gpu_quota(
    nominal: int, borrowing: int | None = None, lending: int | None = None
) -> dict[str, QuotaLimit]:
    return {f"devices/{GPU}": QuotaLimit(nominal, borrowing, lending)}


def cluster(
    nodes: int = 2, gpus_per_node: int = 8, queues: tuple[Queue, ...] | None = None
) -> ClusterState:
    """Nodes n0..n{k-1} with GPUs, class `gpu`, and by default one unlimited queue team-a."""
    state = ClusterState()
    state.upsert_device_class(DeviceClass(GPU, (f'device.driver == "{DRIVER}"',)))
    for i in range(nodes):
        state.upsert_node(node(f"n{i}"))
        if gpus_per_node:
            state.upsert_slice(gpu_slice(f"n{i}", gpus_per_node))
    for q in queues if queues is not None else (Queue("team-a"),):
        state.upsert_queue(q)
    return state


def engine(state: ClusterState, **kw: object) -> Engine:
    return Engine(state, **kw)  # type: ignore[arg-type]
