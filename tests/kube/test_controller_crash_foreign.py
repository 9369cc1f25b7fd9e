"""Crash safety of foreign gangs: the controller fail-stops after every write of a foreign
gang's commit protocol in turn (its record, each claim's finalizer and allocation, each
binding), and of its eviction (DisruptionTarget, the record released, pods deleted, claims
deallocated, the record deleted); a fresh one takes over, and the live objects show no
leaked device, no double allocation, no partial gang and exact quota."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from controller.kube import resources as r
from controller.kube.rest import Obj, Rest
from controller.settings import Settings
from emulator import Emulator
from tests.kube.controller_cluster import (
    NAMESPACE,
    Running,
    foreign_gang_gone,
    gang_job,
    gpu_cluster,
    items,
    queue,
    running,
    until,
)
from tests.kube.controller_env import create, emulator, load_crds, rest
from tests.kube.test_controller_crash import kubelet_finishes_deletions
from tests.kube.test_controller_foreign import indexed_job_pod

__all__ = ["emulator", "rest", "running"]

pytestmark = pytest.mark.looptime

PODS = 2
RECORD = r.CONFIG_MAPS.path(NAMESPACE, "phalanx-gang-theirs")
ADMISSION_WRITES = 9
"""At most: the record, per claim its finalizer and allocation, per pod its binding, and a
Queue status write or two."""
EVICTION_WRITES = 20
"""Writes up to where the eviction waits for the pods to stop (no kubelet finishes them
before the crash): the DisruptionTarget marks, the record released, the preemptor's
finalizer, record and Event, the victims' pods deleted, the preemptor's Service, claims and
pods, a Queue status write or two."""


@pytest.fixture
async def cluster(emulator: Emulator, rest: Rest) -> Rest:
    """Two 2-GPU nodes, and a 2-pod foreign gang whose claims the resourceclaim controller
    has made from its template."""
    await load_crds(emulator)
    await gpu_cluster(rest, nodes=2, gpus=2)
    await create(rest, r.QUEUES, queue(devices__gpu=4))
    for i in range(PODS):
        await create(rest, r.PODS, indexed_job_pod("theirs", i, PODS))

    async def claims_made() -> bool:
        pods = await items(rest, r.PODS)
        return len(await items(rest, r.RESOURCE_CLAIMS)) == PODS and all(
            (p.get("status") or {}).get("resourceClaimStatuses") for p in pods
        )

    await until(claims_made)
    return rest


def devices(claim: Obj) -> list[tuple[str, str]]:
    allocation = (claim.get("status") or {}).get("allocation") or {}
    return [
        (d["pool"], d["device"]) for d in (allocation.get("devices") or {}).get("results") or ()
    ]


async def gang_bound(rest: Rest, gang: str = "theirs") -> bool:
    pods = await items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={gang}")
    return len(pods) == PODS and all(p["spec"].get("nodeName") for p in pods)


async def assert_exact(rest: Rest, running: Running) -> None:
    """The gang whole, each claim holding one device of its pod's node and reserved for
    that pod, no device twice, the record and the quota holding exactly the gang."""
    pods = {p["metadata"]["name"]: p for p in await items(rest, r.PODS)}
    claims = await items(rest, r.RESOURCE_CLAIMS)
    held = Counter(d for c in claims for d in devices(c))
    assert all(n == 1 for n in held.values()) and len(held) == PODS, held
    for claim in claims:
        (consumer,) = claim["status"]["reservedFor"]
        pod = pods[consumer["name"]]
        assert consumer["uid"] == pod["metadata"]["uid"]
        ((pool, _),) = devices(claim)
        assert pool == pod["spec"]["nodeName"]
    record = await rest.get(RECORD)
    assert "released" not in record["data"]["admission"]
    assert running.controller is not None
    state = running.controller.caches.state
    assert list(state.admitted) == ["gang:default/theirs"]
    assert state.quota.usage("q").get("devices/gpu") == PODS
    assert state.violations() == []


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


@pytest.mark.parametrize("writes", range(ADMISSION_WRITES))
async def test_a_foreign_gang_admission_stopped_after_any_write_is_rolled_forward(
    cluster: Rest, emulator: Emulator, running: Running, writes: int
) -> None:
    await crash_after(emulator, running, writes)
    await running.start()
    await until(lambda: gang_bound(cluster))
    await asyncio.sleep(2)
    await assert_exact(cluster, running)


async def test_every_write_of_a_foreign_admission_is_covered(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    budget = 10**6
    emulator.fail_after_writes(budget)
    await running.start()
    await until(lambda: gang_bound(cluster))
    await asyncio.sleep(2)
    assert emulator.faults.writes_left is not None
    assert budget - emulator.faults.writes_left <= ADMISSION_WRITES


async def preempted(rest: Rest, running: Running) -> None:
    """The foreign gang admitted, then a higher-priority 4-GPU GangJob submitted."""
    await running.start(Settings.load(preemption="priority"))
    await until(lambda: gang_bound(rest))
    await running.crash()
    await create(rest, r.GANG_JOBS, gang_job("high", [("w", 4)], gpu=True, priority=100))


async def evicted_and_replaced(rest: Rest, running: Running) -> None:
    """What a kubelet would do meanwhile (finish deleted pods), until the foreign gang is
    gone whole (pods, allocations, record) and the preemptor bound."""

    async def done() -> bool:
        await kubelet_finishes_deletions(rest)
        high = await items(rest, r.PODS, labelSelector="phalanx.dev/gang=high")
        return (
            await foreign_gang_gone(rest, "theirs")
            and len(high) == 4
            and all(p["spec"].get("nodeName") for p in high)
        )

    await until(done)


@pytest.mark.parametrize("writes", range(EVICTION_WRITES))
async def test_a_foreign_gang_eviction_stopped_after_any_write_is_finished_by_the_next(
    cluster: Rest, emulator: Emulator, running: Running, writes: int
) -> None:
    await preempted(cluster, running)
    settings = Settings.load(preemption="priority")
    await crash_after(emulator, running, writes, settings)
    controller = await running.start(settings)
    await evicted_and_replaced(cluster, running)
    await asyncio.sleep(2)
    claims = await items(cluster, r.RESOURCE_CLAIMS)
    held = Counter(d for c in claims for d in devices(c))
    assert all(n == 1 for n in held.values()) and len(held) == 4, held
    state = controller.caches.state
    assert len(state.admitted) == 1 and "gang:default/theirs" not in state.admitted
    assert state.quota.usage("q").get("devices/gpu") == 4
    assert state.violations() == []
