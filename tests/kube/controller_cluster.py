"""A running controller against the emulator, and the cluster objects e2e tests build on.

`running` starts caches + decision loop as a fresh controller would (call it again after
cancelling to play a restart); `until` waits, in loop time, for a condition on the API;
`crash_after`, `recovered` and `writes_until` fail-stop a controller after so many writes,
let a fresh one take over, and count what it writes (the crash tests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from controller.engine.cycle import Engine
from controller.engine.state import ClusterState
from controller.kube import resources as r
from controller.kube.caches import ClusterCaches
from controller.kube.loop import Controller, LoopOptions
from controller.kube.manager import engine_for
from controller.kube.metrics import NO_METRICS, Recorder
from controller.kube.rest import KubeError, Obj, Rest
from controller.kube.translate import ADMISSION_ANNOTATION
from controller.settings import Settings
from emulator import Emulator
from tests.kube.controller_env import GANG_API, create, owned_by

NAMESPACE = "default"


class Running:
    """Start and crash controllers; every one started is stopped at the end.

    Their wall clock (`clock`) moves with the event loop's time, which looptime makes
    virtual: the timers a controller derives from the API's timestamps then run on it,
    and stay continuous across restarts."""

    def __init__(self, rest: Rest) -> None:
        self.rest = rest
        self.tasks: list[asyncio.Task[None]] = []
        self.controller: Controller | None = None
        self._offset: float | None = None

    def clock(self) -> float:
        loop = asyncio.get_running_loop()
        if self._offset is None:
            self._offset = time.time() - loop.time()
        return self._offset + loop.time()

    async def start(
        self, settings: Settings | None = None, metrics: Recorder = NO_METRICS
    ) -> Controller:
        """A controller with the default engine, or the policies of `settings`."""
        caches = await ClusterCaches.discover(self.rest, ClusterState(), clock=self.clock)
        engine = Engine(caches.state) if settings is None else engine_for(settings, caches.state)
        controller = Controller(
            self.rest,
            caches,
            engine,
            options=LoopOptions(instance="test"),
            metrics=metrics,
            clock=self.clock,
        )
        self.tasks = [
            asyncio.create_task(caches.run()),
            asyncio.create_task(controller.run()),
        ]
        await asyncio.wait_for(caches.ready.wait(), 60)
        self.controller = controller
        return controller

    async def crash(self) -> None:
        """Cancel the controller's tasks wherever they are (a fail-stop)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []


@pytest.fixture
async def running(rest: Rest) -> AsyncIterator[Running]:
    run = Running(rest)
    yield run
    await run.crash()


async def until(
    check: Callable[[], Awaitable[bool]], timeout: float = 120.0, step: float = 0.2
) -> None:
    """Poll `check` (in loop time) until it holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached in {timeout} s: {check.__name__}")
        await asyncio.sleep(step)


async def crash_after(
    emulator: Emulator, running: Running, writes: int, settings: Settings | None = None
) -> None:
    """Start a controller that fail-stops after `writes` writes (or has nothing more to
    write for a minute); crash it; clear the fault."""
    emulator.fail_after_writes(writes)
    await running.start(settings)
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def writes_used_up() -> bool:
        return emulator.faults.writes_left == 0 or loop.time() - began > 60

    await until(writes_used_up)
    await asyncio.sleep(1)
    await running.crash()
    emulator.clear_faults()


async def recovered(
    emulator: Emulator,
    running: Running,
    writes: int,
    done: Callable[[], Awaitable[bool]],
    settings: Settings | None = None,
) -> Controller:
    """A controller fail-stopped after `writes` writes (`crash_after`), then a fresh one
    until `done` holds, and 2 s more for it to settle; returns the fresh one."""
    await crash_after(emulator, running, writes, settings)
    controller = await running.start(settings)
    await until(done)
    await asyncio.sleep(2)
    return controller


async def writes_until(
    emulator: Emulator, running: Running, done: Callable[[], Awaitable[bool]]
) -> int:
    """How many writes a fresh controller makes until `done` holds (and 2 s after)."""
    budget = 10**6
    emulator.fail_after_writes(budget)
    await running.start()
    await until(done)
    await asyncio.sleep(2)
    assert emulator.faults.writes_left is not None
    return budget - emulator.faults.writes_left


async def items(rest: Rest, resource: r.Resource, **query: str) -> list[Obj]:
    return list((await rest.get(resource.path(NAMESPACE), query or None)).get("items") or [])


async def job(rest: Rest, name: str) -> Obj:
    return await rest.get(r.GANG_JOBS.path(NAMESPACE, name))


def one_slot_node(name: str, pods: int = 1, **labels: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "status": {
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": str(pods)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


async def add_node(rest: Rest, name: str, pods: int = 1) -> Obj:
    """A Ready node without the not-ready taint the API server puts on new nodes (the node
    lifecycle controller removes it in a cluster)."""
    await create(rest, r.NODES, one_slot_node(name, pods))
    return await rest.request(
        "PATCH",
        r.NODES.path(name=name),
        body={"spec": {"taints": None}},
        content_type="application/merge-patch+json",
    )


def gpu_class() -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": "gpu"},
        "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.io'"}}]},
    }


def gpu_slice(node_name: str, gpus: int) -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node_name}-gpus"},
        "spec": {
            "driver": "gpu.io",
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": f"gpu-{i}"} for i in range(gpus)],
        },
    }


def one_gpu_template() -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "one-gpu", "namespace": NAMESPACE},
        "spec": {
            "spec": {
                "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}
            }
        },
    }


def queue(name: str = "q", **nominal: int | str) -> Obj:
    quota = [{"resource": k.replace("__", "/"), "nominal": v} for k, v in nominal.items()]
    return {
        "apiVersion": GANG_API,
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": {"quota": quota},
    }


def gang_job(
    name: str,
    sets: list[tuple[str, int]],
    *,
    gpu: bool = False,
    cpu: str = "100m",
    queue_name: str = "q",
    **spec: Any,
) -> Obj:
    pod_spec: dict[str, Any] = {
        "containers": [
            {"name": "train", "image": "trainer", "resources": {"requests": {"cpu": cpu}}}
        ]
    }
    if gpu:
        pod_spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]
    return {
        "apiVersion": GANG_API,
        "kind": "GangJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "queueName": queue_name,
            "podSets": [
                {"name": s, "replicas": n, "template": {"spec": pod_spec}} for s, n in sets
            ],
            **spec,
        },
    }


async def gpu_cluster(
    rest: Rest, nodes: int, gpus: int, pods: int = 110, *, queue_gpus: int | None = None
) -> None:
    """`nodes` nodes of `gpus` GPUs each (the GPU DeviceClass, the one-GPU claim template),
    and, given `queue_gpus`, the queue `q` with that devices/gpu quota."""
    await create(rest, r.DEVICE_CLASSES, gpu_class())
    await create(rest, r.CLAIM_TEMPLATES, one_gpu_template())
    for i in range(nodes):
        await add_node(rest, f"n{i}", pods)
        await create(rest, r.RESOURCE_SLICES, gpu_slice(f"n{i}", gpus))
    if queue_gpus is not None:
        await create(rest, r.QUEUES, queue(devices__gpu=queue_gpus))


async def finish_pods(rest: Rest, job_name: str, phase: str = "Succeeded") -> None:
    """What a kubelet would report: every pod of the job ends in `phase`."""
    for pod in await items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={job_name}"):
        pod["status"] = {**(pod.get("status") or {}), "phase": phase}
        await rest.request(
            "PUT", r.PODS.path(NAMESPACE, pod["metadata"]["name"], "status"), body=pod
        )


async def allocated_claim(
    rest: Rest, name: str, device: tuple[str, str], owner: Obj | None = None
) -> Obj:
    """A claim allocated `device` (pool, name) by someone: us if `owner` is given."""
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if owner is not None:
        meta["ownerReferences"] = [owned_by(owner)]
        meta["annotations"] = {ADMISSION_ANNOTATION: "a1"}
    claim = await create(
        rest,
        r.RESOURCE_CLAIMS,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": meta,
            "spec": {
                "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}
            },
        },
    )
    result = {"request": "gpu", "driver": "gpu.io", "pool": device[0], "device": device[1]}
    claim["status"] = {"allocation": {"devices": {"results": [result]}}}
    return await rest.request("PUT", r.RESOURCE_CLAIMS.path("default", name, "status"), body=claim)


async def foreign_gang_gone(rest: Rest, gang: str) -> bool:
    """No pod of the foreign (label) gang left, none of its claims allocated, and its
    record ConfigMap deleted."""
    try:
        await rest.get(r.CONFIG_MAPS.path(NAMESPACE, f"phalanx-gang-{gang}"))
        return False
    except KubeError as exc:
        if exc.status != 404:
            raise
    pods = await items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={gang}")
    claims = [
        c
        for c in await items(rest, r.RESOURCE_CLAIMS)
        if c["metadata"]["name"].startswith(f"{gang}-")
    ]
    return not pods and not any((c.get("status") or {}).get("allocation") for c in claims)
