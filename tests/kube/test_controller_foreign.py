"""Pods of other controllers joined into gangs by label or by an upstream PodGroup:
admitted whole once the gang's size of pods exists, their template claims allocated by
us, never partly bound; a restarted controller keeps them from their record."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller.kube import resources as r
from controller.kube.informer import Informer
from controller.kube.rest import Obj, Rest
from tests.kube.controller_cluster import (
    NAMESPACE,
    finish_pods,
    gpu_cluster,
    items,
    running,
    until,
)
from tests.kube.controller_env import crds, create, emulator, rest

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime


def indexed_job_pod(job: str, index: int, size: int) -> Obj:
    """A pod as the Job controller makes it for an Indexed Job, with the gang labels."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-{index}-x{index:04d}",
            "namespace": NAMESPACE,
            "labels": {
                "batch.kubernetes.io/job-completion-index": str(index),
                "job-name": job,
                "phalanx.dev/gang": job,
                "phalanx.dev/queue": "q",
            },
            "annotations": {"phalanx.dev/gang-size": str(size)},
        },
        "spec": _pod_spec(),
    }


async def submit_indexed_job(rest: Rest, job: str, size: int) -> None:
    """Every pod of an Indexed Job of `size` with the gang labels."""
    for i in range(size):
        await create(rest, r.PODS, indexed_job_pod(job, i, size))


def group_pod(name: str, group: str) -> Obj:
    spec = {**_pod_spec(), "schedulingGroup": {"podGroupName": group}}
    meta = {"name": name, "namespace": NAMESPACE, "labels": {"phalanx.dev/queue": "q"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _pod_spec() -> dict[str, Any]:
    return {
        "schedulerName": "phalanx",
        "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
    }


def pod_group(name: str, min_count: int) -> Obj:
    return {
        "apiVersion": "scheduling.k8s.io/v1alpha2",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"schedulingPolicy": {"gang": {"minCount": min_count}}},
    }


class Bindings:
    """Every pod binding seen by a watch, in order."""

    def __init__(self, rest: Rest) -> None:
        self.bound: list[str] = []
        self.informer = Informer(rest, r.PODS)
        self.informer.add_handler(self._on)
        self.task = asyncio.create_task(self.informer.run())

    def _on(self, kind: str, old: Obj | None, new: Obj) -> None:
        if new["spec"].get("nodeName") and not ((old or {}).get("spec") or {}).get("nodeName"):
            self.bound.append(new["metadata"]["name"])

    def stop(self) -> None:
        self.task.cancel()


async def one_node_started(rest: Rest, running: Any, gpus: int) -> Any:
    """One node with `gpus` GPUs, a queue with room for all of them, the controller on."""
    await gpu_cluster(rest, nodes=1, gpus=gpus, queue_gpus=gpus)
    return await running.start()


async def bound_count(rest: Rest) -> int:
    return sum(1 for p in await items(rest, r.PODS) if p["spec"].get("nodeName"))


async def until_bound(rest: Rest, count: int) -> None:
    async def bound() -> bool:
        return await bound_count(rest) == count

    await until(bound)


async def test_an_indexed_job_with_gang_labels_is_admitted_whole(crds: Rest, running) -> None:
    await gpu_cluster(crds, nodes=2, gpus=4, queue_gpus=8)
    watch = Bindings(crds)
    controller = await running.start()
    for i in range(7):
        await create(crds, r.PODS, indexed_job_pod("train", i, 8))
    await asyncio.sleep(10)
    assert watch.bound == []
    assert controller.caches.foreign.reasons["gang:default/train"] == (
        "waiting for pods: 7 of 8 exist"
    )
    await create(crds, r.PODS, indexed_job_pod("train", 7, 8))

    await until_bound(crds, 8)
    watch.stop()
    assert len(watch.bound) == 8
    pods = {p["metadata"]["name"]: p for p in await items(crds, r.PODS)}
    devices = set()
    for claim in await items(crds, r.RESOURCE_CLAIMS):
        owner = claim["metadata"]["ownerReferences"][0]["name"]
        (consumer,) = claim["status"]["reservedFor"]
        assert consumer["uid"] == pods[owner]["metadata"]["uid"]
        (result,) = claim["status"]["allocation"]["devices"]["results"]
        assert result["pool"] == pods[owner]["spec"]["nodeName"]
        devices.add((result["pool"], result["device"]))
    assert len(devices) == 8
    state = controller.caches.state
    assert state.quota.usage("q").get("devices/gpu") == 8
    assert state.violations() == []


async def test_an_upstream_pod_group_is_admitted_whole_once_min_count_pods_exist(
    crds: Rest, running
) -> None:
    await gpu_cluster(crds, nodes=2, gpus=2, queue_gpus=4)
    await create(crds, r.POD_GROUPS, pod_group("pg", 4))
    watch = Bindings(crds)
    controller = await running.start()
    for i in range(3):
        await create(crds, r.PODS, group_pod(f"pg-{i}", "pg"))
    await asyncio.sleep(10)
    assert watch.bound == []
    assert controller.caches.foreign.reasons["podgroup:default/pg"] == (
        "waiting for pods: 3 of 4 exist"
    )
    await create(crds, r.PODS, group_pod("pg-3", "pg"))

    await until_bound(crds, 4)
    watch.stop()
    assert sorted(watch.bound) == ["pg-0", "pg-1", "pg-2", "pg-3"]
    record = await crds.get(r.CONFIG_MAPS.path(NAMESPACE, "phalanx-podgroup-pg"))
    assert record["metadata"]["ownerReferences"][0]["kind"] == "PodGroup"


async def test_too_few_pods_for_the_gang_bind_nothing(crds: Rest, running) -> None:
    await gpu_cluster(crds, nodes=2, gpus=4, queue_gpus=8)
    controller = await running.start()
    for i in range(3):
        await create(crds, r.PODS, indexed_job_pod("small", i, 4))
    await asyncio.sleep(30)
    assert await bound_count(crds) == 0
    assert all(
        not (c.get("status") or {}).get("allocation") for c in await items(crds, r.RESOURCE_CLAIMS)
    )
    assert "gang:default/small" not in controller.caches.state.pending


async def test_a_restarted_controller_keeps_a_foreign_gang_from_its_record(
    crds: Rest, running
) -> None:
    await gpu_cluster(crds, nodes=1, gpus=4, queue_gpus=4)
    await running.start()
    await submit_indexed_job(crds, "first", 4)

    await until_bound(crds, 4)
    await running.crash()
    await submit_indexed_job(crds, "second", 4)
    controller = await running.start()
    await asyncio.sleep(10)
    state = controller.caches.state
    assert "gang:default/first" in state.admitted
    assert state.quota.usage("q").get("devices/gpu") == 4
    assert await bound_count(crds) == 4
    assert state.violations() == []


async def test_a_finished_foreign_gang_is_released_and_the_next_one_admitted(
    crds: Rest, running
) -> None:
    controller = await one_node_started(crds, running, gpus=4)
    await submit_indexed_job(crds, "first", 4)
    await submit_indexed_job(crds, "second", 4)

    await until_bound(crds, 4)
    winner = next(p for p in await items(crds, r.PODS) if p["spec"].get("nodeName"))
    done = winner["metadata"]["labels"]["phalanx.dev/gang"]
    for pod in await items(crds, r.PODS, labelSelector=f"phalanx.dev/gang={done}"):
        pod["status"] = {**(pod.get("status") or {}), "phase": "Succeeded"}
        await crds.request(
            "PUT", r.PODS.path(NAMESPACE, pod["metadata"]["name"], "status"), body=pod
        )
    other = "second" if done == "first" else "first"

    async def other_bound() -> bool:
        pods = await items(crds, r.PODS, labelSelector=f"phalanx.dev/gang={other}")
        return all(p["spec"].get("nodeName") for p in pods)

    await until(other_bound)
    state = controller.caches.state
    assert list(state.admitted) == [f"gang:default/{other}"]
    assert state.violations() == []


def named_claim(name: str) -> Obj:
    """A ResourceClaim as a user makes it for one pod: no owner, no finalizer."""
    devices = {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"devices": devices},
    }


async def test_a_gang_whose_named_claims_come_after_its_pods_is_admitted_once_they_exist(
    crds: Rest, running
) -> None:
    controller = await one_node_started(crds, running, gpus=2)
    for i in range(2):
        pod = indexed_job_pod("train", i, 2)
        pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": f"c{i}"}]
        await create(crds, r.PODS, pod)
    await asyncio.sleep(5)
    assert controller.caches.foreign.reasons["gang:default/train"] == (
        "waiting for ResourceClaim c0"
    )
    for i in range(2):
        await create(crds, r.RESOURCE_CLAIMS, named_claim(f"c{i}"))

    await until_bound(crds, 2)
    for claim in await items(crds, r.RESOURCE_CLAIMS):
        assert claim["metadata"]["finalizers"] == ["resource.kubernetes.io/delete-protection"]
        assert claim["status"]["allocation"]["devices"]["results"]


async def status_updates(rest: Rest, job: str) -> None:
    """What the kubelet and others write to a bound gang's objects: its pods Running, a
    label on each claim."""
    await finish_pods(rest, job, phase="Running")
    for claim in await items(rest, r.RESOURCE_CLAIMS):
        claim["metadata"].setdefault("labels", {})["seen"] = "yes"
        await rest.request(
            "PUT", r.RESOURCE_CLAIMS.path(NAMESPACE, claim["metadata"]["name"]), body=claim
        )


async def a_settled_bound_foreign_gang(rest: Rest, running):
    """A 4-pod foreign Indexed Job bound on one node, left until its writes settle."""
    controller = await one_node_started(rest, running, gpus=4)
    await submit_indexed_job(rest, "train", 4)
    await until_bound(rest, 4)
    await asyncio.sleep(10)
    return controller


async def test_status_updates_of_a_running_foreign_gangs_pods_and_claims_run_no_cycle(
    crds: Rest, running
) -> None:
    controller = await a_settled_bound_foreign_gang(crds, running)
    cycles = controller.cycles
    await status_updates(crds, "train")
    await asyncio.sleep(10)
    assert controller.cycles == cycles
    assert "gang:default/train" in controller.caches.state.admitted
    assert controller.caches.state.violations() == []


async def test_status_updates_of_a_bound_foreign_gangs_pods_and_claims_reconcile_it_no_more(
    crds: Rest, running
) -> None:
    controller = await a_settled_bound_foreign_gang(crds, running)
    reconciled: list[str] = []
    reconcile = controller.reconcile

    async def counted(key: str) -> None:
        reconciled.append(key)
        await reconcile(key)

    controller.reconcile = counted
    await status_updates(crds, "train")
    await asyncio.sleep(10)
    assert "gang:default/train" not in reconciled
    await finish_pods(crds, "train", phase="Succeeded")
    await asyncio.sleep(10)
    assert "gang:default/train" in reconciled
    assert "gang:default/train" not in controller.caches.state.admitted


async def test_a_foreign_gang_too_large_to_record_waits_saying_so_and_writes_nothing(
    crds: Rest, running
) -> None:
    """2,600 pods of names of 245 characters: their record (each pod with its name, uid
    and node, and each an owner of the record) would be over 1.5 MiB, more than etcd
    stores in one object."""
    controller = await one_node_started(crds, running, gpus=1)
    for i in range(2600):
        pod = indexed_job_pod("big", i, 2600)
        pod["metadata"]["name"] = f"big-{i:05d}-{'x' * 235}"
        del pod["spec"]["resourceClaims"]
        await create(crds, r.PODS, pod)
    await asyncio.sleep(10)

    reason = controller.caches.foreign.reasons["gang:default/big"]
    assert reason.startswith("too large to record: 2,600 pods, the record would be ")
    assert reason.endswith(
        " bytes, the API server's limit is 1,572,864 (etcd's for one object); split the "
        "gang or use fewer, larger pods"
    )
    assert "gang:default/big" not in controller.caches.state.pending
    assert await items(crds, r.CONFIG_MAPS, labelSelector="phalanx.dev/record=gang") == []
