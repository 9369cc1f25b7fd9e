"""A foreign gang whose admission cannot be materialised (a claim's or a pod's write
refused after its record was written) is handled as a GangJob's broken admission: the
record is released (the engine holds nothing of it), what was written is rolled back
(bound pods taken down, claims deallocated), an Event says why, and the gang is tried
again after a backoff."""

from __future__ import annotations

import asyncio

import pytest

from controller.kube import foreign as f
from controller.kube import resources as r
from controller.kube.rest import Rest
from emulator import Emulator, Fault
from tests.kube.controller_cluster import NAMESPACE, gpu_cluster, items, queue, running, until
from tests.kube.controller_env import crds, create, emulator, rest
from tests.kube.test_controller_foreign import (
    group_pod,
    named_claim,
    one_node_started,
    pod_group,
    submit_indexed_job,
    until_bound,
)
from tests.kube.test_controller_preemption import gpu_objects, kubelets
from tests.kube.test_controller_shared_claims import sharing_pod

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime

GANG = "gang:default/train"


async def released_record(rest: Rest, name: str = "phalanx-gang-train") -> bool:
    maps = await items(rest, r.CONFIG_MAPS)
    return any(
        m["metadata"]["name"] == name and f.released(f.read_record(m)) is not None for m in maps
    )


async def broken_events(rest: Rest) -> list[dict]:
    events = await rest.get(f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events")
    return [e for e in events.get("items") or () if e["reason"] == f.BROKEN]


async def a_gang_whose_claim_write_is_refused(rest: Rest, emulator: Emulator, running):
    """A 2-pod foreign gang `train` on a node of 2 GPUs, its first claim write refused (422)."""
    controller = await one_node_started(rest, running, gpus=2)
    emulator.inject_fault(Fault("patch", "resourceclaims", code=422, times=1))
    await submit_indexed_job(rest, "train", 2)
    return controller


async def test_a_foreign_gang_whose_claim_write_is_refused_holds_nothing_while_it_waits(
    crds: Rest, emulator: Emulator, running
) -> None:
    controller = await a_gang_whose_claim_write_is_refused(crds, emulator, running)

    await until(lambda: released_record(crds))
    await asyncio.sleep(2)
    state = controller.caches.state
    assert GANG not in state.admitted
    assert state.quota.usage("q").get("devices/gpu", 0) == 0
    assert not any(
        (c.get("status") or {}).get("allocation") for c in await items(crds, r.RESOURCE_CLAIMS)
    )
    assert not any(p["spec"].get("nodeName") for p in await items(crds, r.PODS))
    assert controller.caches.foreign.reasons[GANG].startswith(
        "admission broken, rolled back and tried again in "
    )
    assert state.violations() == []


async def test_a_foreign_gang_whose_claim_write_was_refused_is_admitted_on_the_next_try(
    crds: Rest, emulator: Emulator, running
) -> None:
    controller = await a_gang_whose_claim_write_is_refused(crds, emulator, running)

    await until_bound(crds, 2)
    assert GANG in controller.caches.state.admitted
    assert controller.caches.state.quota.usage("q").get("devices/gpu") == 2


async def test_a_broken_foreign_admission_is_told_by_an_event_on_each_pod(
    crds: Rest, emulator: Emulator, running
) -> None:
    await a_gang_whose_claim_write_is_refused(crds, emulator, running)

    await until(lambda: released_record(crds))
    await asyncio.sleep(1)
    events = await broken_events(crds)
    assert sorted(e["regarding"]["name"] for e in events) == ["train-0-x0000", "train-1-x0001"]
    assert {e["regarding"]["kind"] for e in events} == {"Pod"}
    assert all("injected fault (patch resourceclaims)" in e["note"] for e in events)
    assert {e["type"] for e in events} == {"Warning"}


async def test_a_broken_pod_group_admission_is_told_by_an_event_on_the_pod_group(
    crds: Rest, emulator: Emulator, running
) -> None:
    await one_node_started(crds, running, gpus=2)
    await create(crds, r.POD_GROUPS, pod_group("pg", 2))
    emulator.inject_fault(Fault("patch", "resourceclaims", code=422, times=1))
    for i in range(2):
        await create(crds, r.PODS, group_pod(f"pg-{i}", "pg"))

    await until(lambda: released_record(crds, "phalanx-podgroup-pg"))
    await asyncio.sleep(1)
    (event,) = await broken_events(crds)
    assert (event["regarding"]["kind"], event["regarding"]["name"]) == ("PodGroup", "pg")


async def test_a_foreign_gang_whose_binding_is_refused_has_its_bound_pods_taken_down(
    crds: Rest, emulator: Emulator, running
) -> None:
    """One binding refused, the other done: the bound pod cannot be unbound, so it is
    stopped and deleted (a partial gang must not run) and its claim deallocated; the
    unbound pod is left as it was, to be admitted again with a new pod for the other."""
    async with kubelets(emulator, nodes=1, gpus=2):
        await gpu_objects(crds)
        await create(crds, r.QUEUES, queue(devices__gpu=2))
        controller = await running.start()
        emulator.inject_fault(Fault("bind", "pods", code=422, times=1))
        await submit_indexed_job(crds, "train", 2)

        async def one_pod_left() -> bool:
            return len(await items(crds, r.PODS)) == 1

        await until(one_pod_left)
        await asyncio.sleep(2)
        (left,) = await items(crds, r.PODS)
        assert not left["spec"].get("nodeName")
        assert not left["metadata"].get("deletionTimestamp")
        claims = await items(crds, r.RESOURCE_CLAIMS)
        assert not any((c.get("status") or {}).get("allocation") for c in claims)
        assert GANG not in controller.caches.state.admitted
        assert controller.caches.state.violations() == []


async def test_a_broken_foreign_admission_rolled_back_by_a_new_leader_is_admitted_again(
    crds: Rest, emulator: Emulator, running
) -> None:
    """The released record says what is left to roll back and when to try again: a
    controller that crashed once it was written leaves the rest to the next one."""
    await a_gang_whose_claim_write_is_refused(crds, emulator, running)
    await until(lambda: released_record(crds))
    await running.crash()

    controller = await running.start()
    await until_bound(crds, 2)
    assert GANG in controller.caches.state.admitted
    assert controller.caches.state.violations() == []


async def test_a_broken_foreign_admission_takes_its_pods_out_of_a_claim_another_gang_shares(
    crds: Rest, emulator: Emulator, running
) -> None:
    """Gang a allocated the claim and runs; gang b joined its reservedFor, then its
    binding was refused: b's pod leaves the reservedFor, a's stays, the claim allocated."""
    await gpu_cluster(crds, nodes=1, gpus=2, queue_gpus=2)
    await running.start()
    await create(crds, r.RESOURCE_CLAIMS, named_claim("shared"))
    await create(crds, r.PODS, sharing_pod("a"))
    await until_bound(crds, 1)
    emulator.inject_fault(Fault("bind", "pods", code=422, times=1))
    await create(crds, r.PODS, sharing_pod("b"))

    await until(lambda: released_record(crds, "phalanx-gang-b"))
    await asyncio.sleep(2)
    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    a = await crds.get(r.PODS.path(NAMESPACE, "a-0-x0000"))
    assert [c["uid"] for c in claim["status"]["reservedFor"]] == [a["metadata"]["uid"]]
    assert claim["status"]["allocation"]["devices"]["results"]
