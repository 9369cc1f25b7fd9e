"""The cluster caches feed a ClusterState: nothing before all have synced, then the first
state in one step (admissions restored from records), then events one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.engine.state import ClusterState
from controller.kube import resources as r
from controller.kube.caches import ClusterCaches, served
from controller.kube.rest import Obj, Rest
from emulator import Emulator, Fault
from tests.kube.controller_cluster import allocated_claim, gpu_slice
from tests.kube.controller_env import (
    GANG_API,
    create,
    emulator,
    gangjob,
    load_crds,
    node,
    pod,
    record_for,
    rest,
)

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime


@pytest.fixture
async def cluster(emulator: Emulator, rest: Rest) -> Rest:
    await load_crds(emulator)
    for name in ("n1", "n2"):
        await create(rest, r.NODES, node(name))
    await create(
        rest,
        r.DEVICE_CLASSES,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": "gpu"},
            "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.io'"}}]},
        },
    )
    for name in ("n1", "n2"):
        await create(rest, r.RESOURCE_SLICES, gpu_slice(name, 2))
    await create(
        rest,
        r.QUEUES,
        {
            "apiVersion": GANG_API,
            "kind": "Queue",
            "metadata": {"name": "q"},
            "spec": {"quota": [{"resource": "devices/gpu", "nominal": 8}]},
        },
    )
    await create(
        rest,
        r.CLAIM_TEMPLATES,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "one-gpu", "namespace": "default"},
            "spec": {
                "spec": {
                    "devices": {
                        "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]
                    }
                }
            },
        },
    )
    return rest


async def record_admission(rest: Rest, job: Obj, record: Obj) -> Obj:
    job["status"] = {"admission": record}
    path = r.GANG_JOBS.path("default", job["metadata"]["name"], "status")
    return await rest.request("PUT", path, body=job)


@pytest.fixture
async def start(rest: Rest) -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []

    async def run(**options: Any) -> ClusterCaches:
        caches = await ClusterCaches.discover(rest, ClusterState(), **options)
        tasks.append(asyncio.create_task(caches.run()))
        await asyncio.wait_for(caches.ready.wait(), 60)
        return caches

    yield run
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_first_state_has_the_cluster_and_pending_gangs(cluster: Rest, start: Any) -> None:
    job = await create(cluster, r.GANG_JOBS, gangjob("train"))
    caches = await start()
    state = caches.state
    assert sorted(state.nodes) == ["n1", "n2"]
    assert len(state.inventory.devices) == 4
    assert state.quota.get("q") is not None
    assert "default" in state.namespaces
    assert list(state.pending) == [job["metadata"]["uid"]]
    assert caches.problems == {}


async def test_no_state_is_built_before_every_cache_has_synced(
    cluster: Rest, emulator: Emulator, rest: Rest
) -> None:
    emulator.inject_fault(Fault("*", "queues", code=500))
    caches = ClusterCaches(rest, ClusterState())
    task = asyncio.create_task(caches.run())
    await asyncio.sleep(30)
    assert caches.informers["nodes"].synced.is_set()
    assert (caches.ready.is_set(), caches.state.nodes) == (False, {})
    emulator.clear_faults()
    await asyncio.wait_for(caches.ready.wait(), 120)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sorted(caches.state.nodes) == ["n1", "n2"]


async def test_bound_pods_and_allocated_claims_of_others_are_foreign_usage(
    cluster: Rest, start: Any
) -> None:
    await create(cluster, r.PODS, pod("bound", "n1", cpu="3"))
    await create(cluster, r.PODS, pod("unbound", None))
    await allocated_claim(cluster, "theirs", ("n1", "gpu-0"))
    caches = await start()
    state = caches.state
    assert state.foreign_pods == {"default/bound": ("n1", {"cpu": 3000, "pods": 1})}
    assert state.nodes["n1"].used == {"cpu": 3000, "pods": 1}
    assert state.foreign_claims == {"default/theirs": (("gpu.io", "n1", "gpu-0"),)}


async def test_a_recorded_admission_is_restored_and_its_pods_and_claims_are_ours(
    cluster: Rest, start: Any
) -> None:
    job = await create(cluster, r.GANG_JOBS, gangjob("train"))
    await record_admission(cluster, job, record_for([("n1", "gpu-0"), ("n2", "gpu-0")]))
    await create(cluster, r.PODS, pod("train-w-0", "n1", owner=job))
    await allocated_claim(cluster, "train-w-0-gpu", ("n1", "gpu-0"), owner=job)
    caches = await start()
    state = caches.state
    uid = job["metadata"]["uid"]
    assert list(state.admitted) == [uid]
    assert (state.foreign_pods, state.foreign_claims, caches.unrestorable) == ({}, {}, {})
    assert state.nodes["n1"].used == {"cpu": 1000, "pods": 1}
    assert state.violations() == []


async def test_a_record_whose_device_someone_else_holds_is_not_restored(
    cluster: Rest, start: Any
) -> None:
    job = await create(cluster, r.GANG_JOBS, gangjob("train"))
    await record_admission(cluster, job, record_for([("n1", "gpu-0"), ("n2", "gpu-0")]))
    await allocated_claim(cluster, "theirs", ("n2", "gpu-0"))
    caches = await start()
    uid = job["metadata"]["uid"]
    assert caches.state.admitted == {}
    assert "gpu.io/n2/gpu-0" in caches.unrestorable[uid]
    assert caches.state.violations() == []


async def test_events_after_the_sync_update_the_state(cluster: Rest, start: Any) -> None:
    caches = await start()
    await create(cluster, r.NODES, node("n3"))
    await create(cluster, r.PODS, pod("bound", "n3"))
    await cluster.request("DELETE", r.NODES.path(name="n1"))
    job = await create(cluster, r.GANG_JOBS, gangjob("train"))
    await asyncio.sleep(1)
    state = caches.state
    assert sorted(state.nodes) == ["n2", "n3"]
    assert state.nodes["n3"].used == {"cpu": 1000, "pods": 1}
    assert list(state.pending) == [job["metadata"]["uid"]]


async def test_a_gang_waits_for_its_claim_template(cluster: Rest, start: Any) -> None:
    job = gangjob("train")
    job["spec"]["podSets"][0]["template"]["spec"]["resourceClaims"][0][
        "resourceClaimTemplateName"
    ] = "later"
    created = await create(cluster, r.GANG_JOBS, job)
    caches = await start()
    assert caches.state.pending == {}
    assert (
        "ResourceClaimTemplate default/later does not exist"
        in (caches.problems["GangJob default/train"])
    )
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "later", "namespace": "default"},
        "spec": {
            "spec": {
                "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}
            }
        },
    }
    await create(cluster, r.CLAIM_TEMPLATES, template)
    await asyncio.sleep(1)
    assert list(caches.state.pending) == [created["metadata"]["uid"]]
    assert caches.problems == {}


async def test_released_gang_pods_become_foreign_until_they_are_gone(
    cluster: Rest, start: Any
) -> None:
    job = await create(cluster, r.GANG_JOBS, gangjob("train"))
    job = await record_admission(cluster, job, record_for([("n1", "gpu-0"), ("n2", "gpu-0")]))
    await create(cluster, r.PODS, pod("train-w-0", "n1", owner=job))
    caches = await start()
    job["status"] = {}
    await cluster.request("PUT", r.GANG_JOBS.path("default", "train", "status"), body=job)
    await asyncio.sleep(1)
    state = caches.state
    assert state.admitted == {}
    assert list(state.foreign_pods) == ["default/train-w-0"]
    assert list(state.pending) == [job["metadata"]["uid"]]


async def test_pod_groups_are_watched_because_the_emulator_serves_them(
    cluster: Rest, start: Any
) -> None:
    caches = await start()
    assert "podgroups" in caches.informers


async def test_discovery_says_an_unknown_group_is_not_served(rest: Rest) -> None:
    missing = r.Resource("nothing.example.com", "v1", "things", "Thing", True)
    assert await served(rest, missing) is False
