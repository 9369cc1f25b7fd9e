"""Cycle pacing with a least time between cycles: only events that can change a decision
wake a cycle, and a finished gang's devices are free by the time its release wakes one,
so a gang waiting for them is admitted by that cycle, not one gap later."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from controller.engine.cycle import Engine
from controller.engine.state import ClusterState
from controller.kube import resources as r
from controller.kube.caches import ClusterCaches
from controller.kube.loop import Controller, LoopOptions
from controller.kube.rest import Rest
from tests.kube.controller_cluster import (
    finish_pods,
    gang_job,
    gpu_cluster,
    items,
    job,
    until,
)
from tests.kube.controller_env import crds, create, emulator, rest

__all__ = ["crds", "emulator", "rest"]

pytestmark = pytest.mark.looptime

GAP = 30.0


@asynccontextmanager
async def paced(crds: Rest) -> AsyncIterator[Controller]:
    """Two gangs of 2 one-GPU pods on one node with 2 GPUs: `a` runs, `b` waits for it;
    the controller runs cycles at least GAP seconds apart. (Entered in the test body:
    looptime fakes the clock of the test body only.)"""
    await gpu_cluster(crds, nodes=1, gpus=2, queue_gpus=4)
    await create(crds, r.GANG_JOBS, gang_job("a", [("w", 2)], gpu=True))
    caches = await ClusterCaches.discover(crds, ClusterState())
    controller = Controller(
        crds, caches, Engine(caches.state), options=LoopOptions(min_cycle_gap=GAP)
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
