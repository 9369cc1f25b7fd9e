"""Faults at the HTTP level and API server restarts: the controller survives each with
nothing lost. Three 2-pod GPU gangs on six GPUs, and a fourth of lower priority that the
quota keeps pending throughout (a controller with a pending gang shuts down as cleanly as
one without); whatever the fault, the live objects end with every gang whole (or, were one
left out, not started at all), every device held once and the quota charged exactly the
admitted gangs, none admitted twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from controller.kube import resources as r
from controller.kube.loop import EVENTS
from controller.kube.metrics import Metrics
from controller.kube.rest import Obj, Rest
from controller.kube.translate import admission_of
from emulator import Emulator, Fault
from tests.kube.controller_cluster import (
    Running,
    gang_job,
    gpu_cluster,
    items,
    job,
    running,
    until,
)
from tests.kube.controller_env import crds, create, emulator, pod, rest

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime

JOBS = ("a", "b", "c")
PODS = 2
ADMITTED = 3


@pytest.fixture
async def cluster(crds: Rest) -> Rest:
    await gpu_cluster(crds, nodes=3, gpus=2, queue_gpus=PODS * ADMITTED)
    return crds


WAITING = "waits"
"""Submitted with the others at a lower priority: no quota is left for it."""


async def submit(rest: Rest) -> None:
    for name in JOBS:
        await create(rest, r.GANG_JOBS, gang_job(name, [("w", PODS)], gpu=True))
    await create(rest, r.GANG_JOBS, gang_job(WAITING, [("w", PODS)], gpu=True, priority=-1))


async def bound(rest: Rest) -> int:
    return sum(1 for p in await items(rest, r.PODS) if p["spec"].get("nodeName"))


async def settled(rest: Rest) -> None:
    """Wait until the admitted gangs are bound, then a while longer for stray writes."""

    async def admitted_gangs_bound() -> bool:
        return await bound(rest) == PODS * ADMITTED

    await until(admitted_gangs_bound, timeout=300)
    await asyncio.sleep(5)


def _devices(claim: Obj) -> list[tuple[str, str]]:
    allocation = (claim.get("status") or {}).get("allocation") or {}
    return [
        (d["pool"], d["device"]) for d in (allocation.get("devices") or {}).get("results") or ()
    ]


async def assert_consistent(rest: Rest, running: Running) -> None:
    """Every gang whole or not at all, no device held twice, quota exact, none admitted
    twice: read from the live objects, and from the running controller's state."""
    pods = await items(rest, r.PODS)
    claims = await items(rest, r.RESOURCE_CLAIMS)
    held = Counter(d for c in claims for d in _devices(c))
    assert all(n == 1 for n in held.values()), held
    admitted = []
    for name in JOBS:
        record = (await job(rest, name)).get("status", {}).get("admission")
        mine = [p for p in pods if p["metadata"]["labels"].get("phalanx.dev/gang") == name]
        if record is None:
            assert not [p for p in mine if p["spec"].get("nodeName")], name
            continue
        admitted.append(name)
        assert len(mine) == PODS and all(p["spec"].get("nodeName") for p in mine), name
        assert {admission_of(p) for p in mine} == {record["admissionId"]}, name
        uids = {p["metadata"]["uid"] for p in mine}
        theirs = [c for c in claims if {o["uid"] for o in c["status"]["reservedFor"]} <= uids]
        assert len(theirs) == PODS and all(_devices(c) for c in theirs), name
    assert len(admitted) == ADMITTED
    assert sum(held.values()) == PODS * ADMITTED
    waiting = (await job(rest, WAITING))["status"]
    assert waiting["phase"] == "Pending" and "admission" not in waiting
    queued = {c["type"]: c for c in waiting["conditions"]}["Queued"]
    assert queued["status"] == "True" and "quota" in queued["message"]
    admissions = Counter(
        e["regarding"]["name"] for e in await items(rest, EVENTS) if e.get("action") == "Admitted"
    )
    assert all(admissions[name] <= 1 for name in JOBS), admissions
    assert running.controller is not None
    state = running.controller.caches.state
    assert state.quota.usage("q").get("devices/gpu") == PODS * ADMITTED
    assert len(state.admitted) == ADMITTED
    assert state.violations() == []


WRITES = ("create", "update", "patch", "bind")


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([Fault("patch", "gangjobs", code=409, times=4)], id="409-at-commit-point"),
        pytest.param(
            [Fault(verb, "*", code=500, times=3) for verb in WRITES] + [Fault("*", "*", times=2)],
            id="500-on-writes",
        ),
        pytest.param([Fault("*", "*", code=0, delay=0.7)], id="slow-responses"),
    ],
)
async def test_a_fault_loses_nothing(
    cluster: Rest, emulator: Emulator, running: Running, faults: list[Fault]
) -> None:
    await submit(cluster)
    for fault in faults:
        emulator.inject_fault(fault)
    await running.start()
    await settled(cluster)
    await assert_consistent(cluster, running)
    emulator.clear_faults()
    await running.crash()


async def test_watches_cut_mid_stream_lose_nothing(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    await running.start()
    emulator.inject_fault(Fault("watch", "*", drop_watch_after=1, times=40))
    await submit(cluster)
    await settled(cluster)
    await assert_consistent(cluster, running)


async def first_admitted(rest: Rest) -> None:
    async def any_admission() -> bool:
        records = [(await job(rest, n)).get("status", {}).get("admission") for n in JOBS]
        return any(records)

    await until(any_admission, step=0.01)


async def test_a_429_is_retried_no_sooner_than_its_retry_after(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    await running.start()
    throttled = emulator.inject_fault(Fault("patch", "gangjobs", code=429, retry_after=7, times=1))
    loop = asyncio.get_running_loop()
    await submit(cluster)

    async def throttled_once() -> bool:
        return throttled not in emulator.faults.active

    await until(throttled_once, step=0.01)
    refused_at = loop.time()

    await first_admitted(cluster)
    assert loop.time() - refused_at >= 7 - 0.011  # the refusal is seen up to a poll late
    await settled(cluster)
    await assert_consistent(cluster, running)


async def test_an_api_server_restarted_mid_run_loses_nothing_and_the_watches_resume(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    """The restarted server ends every watch; the caches watch again and catch up."""
    controller = await running.start()
    await submit(cluster)
    await first_admitted(cluster)
    await emulator.restart()
    await settled(cluster)
    await assert_consistent(cluster, running)
    assert controller.caches.informers["pods"].stats.watches >= 2


async def test_a_commit_point_that_keeps_conflicting_is_retried_with_backoff_not_in_a_spin(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    metrics = Metrics()
    emulator.inject_fault(Fault("patch", "gangjobs", code=409))
    await running.start(metrics=metrics)
    await create(cluster, r.GANG_JOBS, gang_job("a", [("w", PODS)], gpu=True))
    loop = asyncio.get_running_loop()
    began = loop.time()

    def conflicts() -> float:
        found = metrics.registry.get_sample_value(
            "phalanx_admission_attempts_total", {"outcome": "conflict"}
        )
        return found or 0.0

    async def spun_or_waited() -> bool:
        return conflicts() >= 40 or loop.time() - began >= 30

    await until(spun_or_waited)
    assert 1 <= conflicts() < 15


async def away_while_changed(emulator: Emulator, *changes: tuple[r.Resource, Obj]) -> None:
    """The API server goes down; objects are created meanwhile (as another server of the
    same etcd would); it comes back without its watch window, so every watch resumes from
    a version it no longer has."""
    await emulator.stop()
    for resource, obj in changes:
        rt = emulator.api.registry.lookup(resource.group, resource.version, resource.plural)
        assert rt is not None
        await emulator.api.create(rt, obj["metadata"]["namespace"], obj, {}, "test", [])
    emulator.forget_watch_window()
    await emulator.start()


async def test_a_restarted_api_server_that_forgot_its_watch_window_is_relisted_and_diffed(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    """Every watch resumes from a version the server no longer has (410 Expired): the
    caches re-list and take only the differences, so the reservations the state holds
    stay the very same objects and nothing is admitted twice."""
    controller = await running.start()
    await submit(cluster)

    async def one_gang_bound() -> bool:
        return await bound(cluster) >= PODS

    await until(one_gang_bound, step=0.01)
    state = controller.caches.state
    bound_gangs = {
        p["metadata"]["ownerReferences"][0]["uid"]
        for p in await items(cluster, r.PODS)
        if p["spec"].get("nodeName")
    }
    held = {uid: state.admitted[uid] for uid in bound_gangs}
    bystander = pod("bystander", None)
    bystander["metadata"]["labels"] = {"app": "bystander"}
    await away_while_changed(
        emulator,
        (r.GANG_JOBS, gang_job("late", [("w", PODS)], gpu=True, priority=-1)),
        (r.PODS, bystander),
    )
    await settled(cluster)
    await assert_consistent(cluster, running)
    informers = controller.caches.informers
    assert informers["gangjobs"].stats.resyncs >= 1
    assert informers["pods"].stats.resyncs >= 1
    assert controller.caches.state is state
    assert all(state.admitted[uid] is reservation for uid, reservation in held.items())


async def test_a_gang_job_whose_claim_write_is_refused_is_released_and_admitted_again(
    crds: Rest, emulator: Emulator, running: Running
) -> None:
    """A 422 no retry can change: the admission is broken, released (AdmissionBroken, an
    Event), its claims made again, and the gang admitted anew."""
    await gpu_cluster(crds, nodes=1, gpus=2, queue_gpus=2)
    await running.start()
    emulator.inject_fault(Fault("patch", "resourceclaims", code=422, times=1))
    await create(crds, r.GANG_JOBS, gang_job("train", [("w", 2)], gpu=True))

    async def gang_bound() -> bool:
        return await bound(crds) == 2

    await until(gang_bound)
    events = (await crds.get(EVENTS.path("default"))).get("items") or []
    broken = [e for e in events if e["reason"] == "AdmissionBroken"]
    assert {(e["regarding"]["kind"], e["regarding"]["name"]) for e in broken} == {
        ("GangJob", "train")
    }
    assert all("injected fault (patch resourceclaims)" in e["note"] for e in broken)
