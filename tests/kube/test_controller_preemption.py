"""Preemption end to end, with simulated kubelets that stop pods as a kubelet does: whole
gangs evicted (pods deleted with a DisruptionTarget condition, claims deallocated), quota
borrowed through a parent queue reclaimed by its owner, and a preemptor that takes its
nodes and devices only once its victims' pods have left them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from controller.kube import resources as r
from controller.kube.informer import Informer
from controller.kube.rest import Obj, Rest
from controller.settings import Settings
from emulator import Emulator
from emulator.kubelet import STOP_ANNOTATION, Kubelet, NodeDescription, api_client
from tests.kube.controller_cluster import (
    GANG_API,
    foreign_gang_gone,
    gang_job,
    gpu_class,
    items,
    job,
    one_gpu_template,
    queue,
    running,
    until,
)
from tests.kube.controller_env import crds, create, emulator, rest
from tests.kube.test_controller_foreign import indexed_job_pod
from tests.kube.test_controller_lifecycle import phase_is

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime

STOP_SECONDS = 20


@asynccontextmanager
async def kubelets(emulator: Emulator, nodes: int, gpus: int) -> AsyncIterator[Kubelet]:
    """Kubelets of `nodes` nodes with `gpus` GPUs each (slices of driver gpu.io). Started
    in the test body: looptime fakes the clock of the test body only."""
    described = [NodeDescription(f"n{i}", gpus=gpus, driver="gpu.io") for i in range(nodes)]
    async with (
        await api_client(emulator.kubeconfig_path) as api,
        Kubelet(api, described) as agent,
    ):
        yield agent


def slow_to_stop(manifest: Obj) -> Obj:
    """Pods whose containers take STOP_SECONDS to exit once deleted."""
    for pod_set in manifest["spec"]["podSets"]:
        pod_set["template"]["metadata"] = {"annotations": {STOP_ANNOTATION: str(STOP_SECONDS)}}
    return manifest


class Overlaps:
    """What the test's own watches saw: a pod bound to a node that still had a pod of
    another gang on it, or a device allocated to two claims at once."""

    def __init__(self, rest: Rest) -> None:
        self.found: list[str] = []
        self.bound_at: dict[str, float] = {}
        self.pods = Informer(rest, r.PODS)
        self.claims = Informer(rest, r.RESOURCE_CLAIMS)
        self.pods.add_handler(self._on_pod)
        self.claims.add_handler(self._on_claim)
        self.tasks = [asyncio.create_task(i.run()) for i in (self.pods, self.claims)]

    def _on_pod(self, kind: str, old: Obj | None, new: Obj) -> None:
        node = new["spec"].get("nodeName")
        if not node or ((old or {}).get("spec") or {}).get("nodeName"):
            return
        name = new["metadata"]["name"]
        self.bound_at[name] = asyncio.get_running_loop().time()
        gang = new["metadata"]["labels"]["phalanx.dev/gang"]
        there = [
            p["metadata"]["name"]
            for p in self.pods.cache.values()
            if p["spec"].get("nodeName") == node
            and p["metadata"]["labels"].get("phalanx.dev/gang") != gang
            and p["status"].get("phase") not in ("Succeeded", "Failed")
        ]
        if there:
            self.found.append(f"{name} bound to {node} while {there} were still there")

    def _on_claim(self, kind: str, old: Obj | None, new: Obj) -> None:
        holders: dict[tuple[str, str], list[str]] = {}
        for claim in self.claims.cache.values():
            allocation = (claim.get("status") or {}).get("allocation") or {}
            for d in (allocation.get("devices") or {}).get("results") or ():
                holders.setdefault((d["pool"], d["device"]), []).append(claim["metadata"]["name"])
        self.found.extend(
            f"device {d} allocated to {sorted(c)}" for d, c in holders.items() if len(c) > 1
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def overlaps(crds: Rest) -> AsyncIterator[Overlaps]:
    watch = Overlaps(crds)
    yield watch
    await watch.stop()


def gang_running(rest: Rest, name: str, pods: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        found = await items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={name}")
        return len(found) == pods and all(
            p["spec"].get("nodeName") and (p.get("status") or {}).get("phase") == "Running"
            for p in found
        )

    check.__name__ = f"{name}_running"
    return check


def conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in obj["status"].get("conditions") or ()}


async def gpu_objects(rest: Rest) -> None:
    await create(rest, r.DEVICE_CLASSES, gpu_class())
    await create(rest, r.CLAIM_TEMPLATES, one_gpu_template())


async def test_a_preemptor_binds_only_once_its_victims_pods_are_gone(
    crds: Rest, emulator: Emulator, running, overlaps: Overlaps
) -> None:
    async with kubelets(emulator, nodes=2, gpus=2):
        await gpu_objects(crds)
        await create(crds, r.QUEUES, queue(devices__gpu=8))
        await create(crds, r.GANG_JOBS, slow_to_stop(gang_job("low", [("w", 4)], gpu=True)))
        await running.start(Settings.load(preemption="priority"))
        await until(gang_running(crds, "low", 4))
        await create(crds, r.GANG_JOBS, gang_job("high", [("w", 2)], gpu=True, priority=100))
        await until(phase_is(crds, "low", "Pending"))
        preempted_at = asyncio.get_running_loop().time()
        await until(gang_running(crds, "high", 2))
        first = min(t for name, t in overlaps.bound_at.items() if name.startswith("high-"))
        assert overlaps.found == []
        assert first - preempted_at >= STOP_SECONDS - 1
        assert conditions(await job(crds, "low"))["Preempted"]["status"] == "True"


def child_queue(name: str, parent: str, gpus: int) -> Obj:
    return {
        "apiVersion": GANG_API,
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": {"parent": parent, "quota": [{"resource": "devices/gpu", "nominal": gpus}]},
    }


class Disruptions:
    """The DisruptionTarget reason of every pod that carried one, by pod name."""

    def __init__(self, informer: Informer) -> None:
        self.seen: dict[str, str] = {}
        informer.add_handler(self._on_pod)

    def _on_pod(self, kind: str, old: Obj | None, new: Obj) -> None:
        for c in (new.get("status") or {}).get("conditions") or ():
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
                self.seen[new["metadata"]["name"]] = c["reason"]


async def queue_status(rest: Rest, name: str) -> dict[str, Any]:
    return (await rest.get(r.QUEUES.path(name=name))).get("status") or {}


async def test_borrowed_quota_is_reclaimed_by_its_owner_by_evicting_the_borrowing_gang_whole(
    crds: Rest, emulator: Emulator, running, overlaps: Overlaps
) -> None:
    disruptions = Disruptions(overlaps.pods)
    async with kubelets(emulator, nodes=2, gpus=2):
        await gpu_objects(crds)
        await create(crds, r.QUEUES, {**queue("org"), "spec": {}})
        await create(crds, r.QUEUES, child_queue("a", "org", 2))
        await create(crds, r.QUEUES, child_queue("b", "org", 2))
        wide = gang_job("wide", [("w", 4)], gpu=True, queue_name="a")
        await create(crds, r.GANG_JOBS, slow_to_stop(wide))
        controller = await running.start(Settings.load(preemption="reclaim"))
        await until(gang_running(crds, "wide", 4))

        async def a_borrows() -> bool:
            return (await queue_status(crds, "a")).get("borrowed") == {"devices/gpu": "2"}

        await until(a_borrows)

        await create(crds, r.GANG_JOBS, gang_job("mine", [("w", 2)], gpu=True, queue_name="b"))
        await until(gang_running(crds, "mine", 2))

        wide = await job(crds, "wide")
        preempted = conditions(wide)["Preempted"]
        assert (wide["status"]["phase"], preempted["status"]) == ("Pending", "True")
        assert "mine" in preempted["message"]
        assert "admission" not in wide["status"]
        assert disruptions.seen == {f"wide-w-{i}": "PreemptionByScheduler" for i in range(4)}

        async def wide_let_go() -> bool:
            pods = await items(crds, r.PODS, labelSelector="phalanx.dev/gang=wide")
            claims = await items(crds, r.RESOURCE_CLAIMS, labelSelector="phalanx.dev/gang=wide")
            return not pods and not any((c.get("status") or {}).get("allocation") for c in claims)

        await until(wide_let_go)
        assert overlaps.found == []
        state = controller.caches.state
        assert state.quota.usage("b").get("devices/gpu") == 2
        assert state.quota.usage("a").get("devices/gpu", 0) == 0
        assert state.violations() == []

        async def a_borrows_nothing() -> bool:
            return (await queue_status(crds, "a")).get("borrowed") == {}

        await until(a_borrows_nothing)


async def test_a_foreign_gang_is_evicted_whole_and_its_claims_and_record_cleaned_up(
    crds: Rest, emulator: Emulator, running, overlaps: Overlaps
) -> None:
    disruptions = Disruptions(overlaps.pods)
    async with kubelets(emulator, nodes=2, gpus=2):
        await gpu_objects(crds)
        await create(crds, r.QUEUES, queue(devices__gpu=8))
        controller = await running.start(Settings.load(preemption="priority"))
        for i in range(4):
            pod = indexed_job_pod("theirs", i, 4)
            pod["metadata"]["annotations"][STOP_ANNOTATION] = str(STOP_SECONDS)
            await create(crds, r.PODS, pod)
        await until(gang_running(crds, "theirs", 4))
        record = r.CONFIG_MAPS.path("default", "phalanx-gang-theirs")
        assert (await crds.get(record))["metadata"]["name"] == "phalanx-gang-theirs"

        await create(crds, r.GANG_JOBS, gang_job("high", [("w", 2)], gpu=True, priority=100))
        await until(gang_running(crds, "high", 2))
        assert disruptions.seen == {
            f"theirs-{i}-x{i:04d}": "PreemptionByScheduler" for i in range(4)
        }

        async def theirs_let_go() -> bool:
            return await foreign_gang_gone(crds, "theirs")

        await until(theirs_let_go)
        assert overlaps.found == []
        state = controller.caches.state
        assert list(state.admitted) == [str((await job(crds, "high"))["metadata"]["uid"])]
        assert state.quota.usage("q").get("devices/gpu") == 2
        assert state.violations() == []
