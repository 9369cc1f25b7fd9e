"""Crash safety of foreign gangs: the controller fail-stops after every write of a foreign
gang's commit protocol in turn (its record, each claim's finalizer and allocation, each
binding), and of its eviction (DisruptionTarget, the record released, pods deleted, claims
deallocated, the record deleted); a fresh one takes over, and the live objects show no
leaked device, no double allocation, no partial gang and exact quota."""

from __future__ import annotations

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
    recovered,
    running,
    until,
    writes_until,
)
from tests.kube.controller_env import crds, create, emulator, rest
from tests.kube.test_controller_crash import kubelet_finishes_deletions
from tests.kube.test_controller_foreign import indexed_job_pod

__all__ = ["crds", "emulator", "rest", "running"]

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
async def cluster(crds: Rest) -> Rest:
    """Two 2-GPU nodes, and a 2-pod foreign gang whose claims the resourceclaim controller
    has made from its template."""
    await gpu_cluster(crds, nodes=2, gpus=2, queue_gpus=4)
    for i in range(PODS):
        await create(crds, r.PODS, indexed_job_pod("theirs", i, PODS))

    async def claims_made() -> bool:
        pods = await items(crds, r.PODS)
        return len(await items(crds, r.RESOURCE_CLAIMS)) == PODS and all(
            (p.get("status") or {}).get("resourceClaimStatuses") for p in pods
        )

    await until(claims_made)
    return crds


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


@pytest.mark.parametrize("writes", range(ADMISSION_WRITES))
async def test_a_foreign_gang_admission_stopped_after_any_write_is_rolled_forward(
    cluster: Rest, emulator: Emulator, running: Running, writes: int
) -> None:
    await recovered(emulator, running, writes, lambda: gang_bound(cluster))
    await assert_exact(cluster, running)


async def test_every_write_of_a_foreign_admission_is_covered(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    assert await writes_until(emulator, running, lambda: gang_bound(cluster)) <= ADMISSION_WRITES


async def preempted(rest: Rest, running: Running) -> None:
    """The foreign gang admitted, then a higher-priority 4-GPU GangJob submitted."""
    await running.start(Settings.load(preemption="priority"))
    await until(lambda: gang_bound(rest))
    await running.crash()
    await create(rest, r.GANG_JOBS, gang_job("high", [("w", 4)], gpu=True, priority=100))


async def evicted_and_replaced(rest: Rest) -> bool:
    """Whether the foreign gang is gone whole (pods, allocations, record) and the
    preemptor bound; doing what a kubelet would meanwhile (finish deleted pods)."""
    await kubelet_finishes_deletions(rest)
    high = await items(rest, r.PODS, labelSelector="phalanx.dev/gang=high")
    return (
        await foreign_gang_gone(rest, "theirs")
        and len(high) == 4
        and all(p["spec"].get("nodeName") for p in high)
    )


@pytest.mark.parametrize("writes", range(EVICTION_WRITES))
async def test_a_foreign_gang_eviction_stopped_after_any_write_is_finished_by_the_next(
    cluster: Rest, emulator: Emulator, running: Running, writes: int
) -> None:
    await preempted(cluster, running)
    settings = Settings.load(preemption="priority")
    controller = await recovered(
        emulator, running, writes, lambda: evicted_and_replaced(cluster), settings
    )
    claims = await items(cluster, r.RESOURCE_CLAIMS)
    held = Counter(d for c in claims for d in devices(c))
    assert all(n == 1 for n in held.values()) and len(held) == 4, held
    state = controller.caches.state
    assert len(state.admitted) == 1 and "gang:default/theirs" not in state.admitted
    assert state.quota.usage("q").get("devices/gpu") == 4
    assert state.violations() == []
