"""Cycle pacing with a least time between cycles: only events that can change a decision
wake a cycle, and a finished gang's devices are free for decisions from its release on,
so a gang waiting for them is admitted by that cycle, not one gap later (and allocates
them once they are deallocated). The gap runs from a cycle's start, and a gang that waits
gets the job's finalizer while it waits, so its admission goes straight to its pods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from controller.engine.cycle import CycleResult, Engine
from controller.engine.state import ClusterState
from controller.kube import resources as r
from controller.kube import translate
from controller.kube.caches import ClusterCaches
from controller.kube.informer import DELETED, Informer
from controller.kube.loop import Controller, LoopOptions
from controller.kube.metrics import Recorder
from controller.kube.reconcile import JOB_FINALIZER
from controller.kube.rest import Obj, Rest
from emulator import Emulator
from emulator.faults import Fault
from tests.kube.controller_cluster import (
    finish_pods,
    gang_job,
    gpu_cluster,
    items,
    job,
    until,
)
from tests.kube.controller_env import (
    CONFIG_MAPS,
    config_map,
    crds,
    create,
    emulator,
    load_crds,
    rest,
    rest_client,
)

__all__ = ["crds", "emulator", "rest"]

pytestmark = pytest.mark.looptime

GAP = 30.0


@pytest.fixture
async def bare() -> AsyncIterator[tuple[Emulator, Rest]]:
    """Our CRDs on an emulator without the controller-manager's controllers: nobody but
    the controller deallocates a finished gang's claims."""
    async with Emulator(service_account_admission=False) as emu, rest_client(emu) as rest:
        await load_crds(emu)
        await create(rest, r.NAMESPACES, {"metadata": {"name": "default"}})
        yield emu, rest


class Cycles(Recorder):
    """When each cycle started and ended (loop time)."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []

    def cycle_done(self, result: CycleResult, decided: float, seconds: float) -> None:
        end = asyncio.get_running_loop().time()
        self.spans.append((end - seconds, end))


@asynccontextmanager
async def paced(crds: Rest, metrics: Recorder | None = None) -> AsyncIterator[Controller]:
    """Two gangs of 2 one-GPU pods on one node with 2 GPUs: `a` runs, `b` waits for it;
    the controller runs cycles at least GAP seconds apart. (Entered in the test body:
    looptime fakes the clock of the test body only.)"""
    await gpu_cluster(crds, nodes=1, gpus=2, queue_gpus=4)
    await create(crds, r.GANG_JOBS, gang_job("a", [("w", 2)], gpu=True))
    caches = await ClusterCaches.discover(crds, ClusterState())
    controller = Controller(
        crds,
        caches,
        Engine(caches.state),
        options=LoopOptions(min_cycle_gap=GAP),
        **({} if metrics is None else {"metrics": metrics}),
    )
    tasks = [asyncio.create_task(caches.run()), asyncio.create_task(controller.run())]
    await until(lambda: bound(crds, "a"))
    await create(crds, r.GANG_JOBS, gang_job("b", [("w", 2)], gpu=True))
    await asyncio.sleep(3 * GAP)
    yield controller
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def bound(rest: Rest, name: str) -> bool:
    pods = await items(rest, r.PODS, labelSelector=f"phalanx.dev/gang={name}")
    return len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods)


async def test_status_updates_of_a_running_gangs_pods_run_no_cycle(crds: Rest) -> None:
    async with paced(crds) as controller:
        cycles = controller.cycles
        await finish_pods(crds, "a", phase="Running")
        await asyncio.sleep(3 * GAP)
        assert controller.cycles == cycles


async def test_a_gang_waiting_for_a_finished_gangs_devices_is_admitted_by_the_release_cycle(
    crds: Rest,
) -> None:
    async with paced(crds):
        assert (await job(crds, "b"))["status"]["phase"] == "Pending"
        loop = asyncio.get_running_loop()
        finished = loop.time()
        await finish_pods(crds, "a")
        await until(lambda: bound(crds, "b"), step=0.05)
        assert loop.time() - finished < GAP
    assert (await job(crds, "a"))["status"]["phase"] == "Succeeded"
    claims = await items(crds, r.RESOURCE_CLAIMS)
    assert {c["metadata"]["name"] for c in claims} == {f"b-w-{i}-gpu" for i in range(2)}


def admitted(obj: Obj) -> bool:
    return bool((obj.get("status") or {}).get("admission"))


async def test_a_finished_gangs_devices_go_to_the_waiting_gang_at_its_release_and_are_allocated_once_freed(  # noqa: E501
    bare: tuple[Emulator, Rest],
) -> None:
    emu, rest = bare
    holders: dict[tuple[str, str, str], str] = {}
    twice: list[str] = []

    def on_claim(kind: str, old: Obj | None, new: Obj) -> None:
        key = r.RESOURCE_CLAIMS.key(new)
        for device in [d for d, k in holders.items() if k == key]:
            del holders[device]
        for device in () if kind == DELETED else translate.claim_devices(new):
            if holders.setdefault(device, key) != key:
                twice.append(f"{device}: {holders[device]} and {key}")

    claims = Informer(rest, r.RESOURCE_CLAIMS)
    claims.add_handler(on_claim)
    watching = asyncio.create_task(claims.run())
    try:
        await allocated_after_release(emu, rest)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    assert twice == []
    assert sorted(holders.values()) == [f"default/b-w-{i}-gpu" for i in range(2)]


async def allocated_after_release(emu: Emulator, rest: Rest) -> None:
    """`b` admitted by the cycle `a`'s release wakes, while `a`'s claims are still
    allocated; then `b` bound."""
    async with paced(rest):
        # claim writes are slow: a's claims stay allocated well after its release
        emu.faults.inject(Fault("patch", "resourceclaims", code=0, delay=GAP / 3))
        loop = asyncio.get_running_loop()
        finished = loop.time()
        await finish_pods(rest, "a")

        async def b_admitted() -> bool:
            return admitted(await job(rest, "b"))

        await until(b_admitted, step=0.05)
        assert loop.time() - finished < GAP
        still = [c for c in await items(rest, r.RESOURCE_CLAIMS) if translate.claim_devices(c)]
        assert {c["metadata"]["name"] for c in still} == {f"a-w-{i}-gpu" for i in range(2)}
        await until(lambda: bound(rest, "b"))


async def test_a_gang_left_waiting_gets_the_job_finalizer_before_its_admission(
    crds: Rest,
) -> None:
    async with paced(crds):
        waiting = await job(crds, "b")
        assert not admitted(waiting)
        assert JOB_FINALIZER in waiting["metadata"].get("finalizers", [])


async def test_the_least_gap_between_cycles_runs_from_a_cycles_start(
    emulator: Emulator, crds: Rest
) -> None:
    cycles = Cycles()
    async with paced(crds, cycles):
        # commit points take a third of the gap: b's admission cycle ends well after it began
        emulator.faults.inject(Fault("patch", "gangjobs", code=0, delay=GAP / 3))
        await finish_pods(crds, "a")
        await until(lambda: bound(crds, "b"))
        began, ended = cycles.spans[-1]
        assert ended - began >= GAP / 3
        await create(crds, r.GANG_JOBS, gang_job("c", [("w", 1)], cpu="1"))

        async def c_admitted() -> bool:
            return admitted(await job(crds, "c"))

        await until(c_admitted, step=0.05)
        assert cycles.spans[-1][0] - began == pytest.approx(GAP, abs=0.5)


async def test_a_finished_gangs_pods_are_deleted_one_at_a_time_in_the_background(
    emulator: Emulator, crds: Rest
) -> None:
    async with paced(crds):
        # deleting a pod takes a whole gap: a's deletions are under way while b is bound
        emulator.faults.inject(Fault("delete", "pods", code=0, delay=GAP))
        loop = asyncio.get_running_loop()
        finished = loop.time()
        await finish_pods(crds, "a")
        await until(lambda: bound(crds, "b"), step=0.05)
        assert loop.time() - finished < GAP / 10

        async def left_of_a() -> int:
            return len(await items(crds, r.PODS, labelSelector="phalanx.dev/gang=a"))

        await asyncio.sleep(finished + 1.5 * GAP - loop.time())
        assert await left_of_a() == 1  # the first is gone, the second still being deleted

        async def a_cleared() -> bool:
            claims = await items(crds, r.RESOURCE_CLAIMS)
            return not await left_of_a() and all(c["metadata"]["name"][0] == "b" for c in claims)

        await until(a_cleared)


async def test_a_name_freed_while_its_holder_is_read_is_created_again(
    emulator: Emulator, crds: Rest
) -> None:
    """A gang's object whose name an earlier admission's object held until a moment ago
    (deleted between the create's conflict and the read of the holder) is created."""
    caches = await ClusterCaches.discover(crds, ClusterState())
    controller = Controller(crds, caches, Engine(caches.state))
    holder = await create(crds, CONFIG_MAPS, config_map("x"))
    emulator.faults.inject(Fault("get", "configmaps", code=0, delay=1.0, times=1))
    creating = asyncio.create_task(controller._create(CONFIG_MAPS, config_map("x")))
    await asyncio.sleep(0.5)  # the create has met the holder, whose read takes 1 s
    await crds.request("DELETE", CONFIG_MAPS.path("default", "x"))
    made = await creating
    assert made["metadata"]["uid"] != holder["metadata"]["uid"]
