"""The controller's metrics as /metrics serves them, after admissions on the emulator: the
admission latency of every gang bound (GangJob and foreign), and cycle durations that
cover the commit point, with the decide step on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.kube import resources as r
from controller.kube.health import HealthServer
from controller.kube.metrics import Metrics
from controller.kube.rest import Rest
from emulator import Emulator, Fault
from tests.kube.controller_cluster import gang_job, gpu_cluster, items, running, until
from tests.kube.controller_env import crds, create, emulator, rest
from tests.kube.test_controller_foreign import indexed_job_pod

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime


@pytest.fixture
async def scraped() -> AsyncIterator[tuple[Metrics, aiohttp.ClientSession]]:
    """Metrics served by a HealthServer, and a session to scrape them."""
    metrics = Metrics()
    server = HealthServer(metrics)
    task = asyncio.create_task(server.run())
    await server.serving.wait()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as http:
        yield metrics, http
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def scrape(http: aiohttp.ClientSession) -> dict[str, float]:
    async with http.get("/metrics") as response:
        text = await response.text()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels or (set(s.labels) == {"le"} and s.labels["le"] == "+Inf")
    }


async def all_bound(rest: Rest, pods: int) -> None:
    async def bound() -> bool:
        found = await items(rest, r.PODS)
        return len(found) == pods and all(p["spec"].get("nodeName") for p in found)

    await until(bound)


async def test_every_gang_bound_observes_its_admission_latency(
    crds: Rest, running, scraped: tuple[Metrics, aiohttp.ClientSession]
) -> None:
    metrics, http = scraped
    loop = asyncio.get_running_loop()
    began, began_virtual = time.time(), loop.time()
    await gpu_cluster(crds, nodes=2, gpus=4, queue_gpus=8)
    await running.start(metrics=metrics)
    await create(crds, r.GANG_JOBS, gang_job("train", [("w", 4)], gpu=True))
    for i in range(4):
        await create(crds, r.PODS, indexed_job_pod("foreign", i, 4))
    await all_bound(crds, 8)
    await asyncio.sleep(5)
    seen = await scrape(http)
    assert seen["phalanx_admission_latency_seconds_count"] == 2
    # the controller's clock moves with the loop's (virtual) time, the API's timestamps
    # with the wall clock, in whole seconds: at most their sum and a second, per gang
    passed = (time.time() - began) + (loop.time() - began_virtual) + 1
    assert 0 <= seen["phalanx_admission_latency_seconds_sum"] <= 2 * passed


async def test_a_cycle_lasts_until_its_admissions_are_committed(
    crds: Rest,
    emulator: Emulator,
    running,
    scraped: tuple[Metrics, aiohttp.ClientSession],
) -> None:
    metrics, http = scraped
    await gpu_cluster(crds, nodes=1, gpus=2, queue_gpus=2)
    await create(crds, r.GANG_JOBS, gang_job("train", [("w", 2)], gpu=True))
    emulator.inject_fault(Fault("patch", "gangjobs", code=0, delay=4.0))
    await running.start(metrics=metrics)
    await all_bound(crds, 2)
    emulator.clear_faults()
    seen = await scrape(http)
    assert seen["phalanx_cycle_duration_seconds_sum"] >= 4.0
    assert (
        seen["phalanx_cycle_decide_seconds_count"] == seen["phalanx_cycle_duration_seconds_count"]
    )
    assert seen["phalanx_cycle_decide_seconds_sum"] < 1.0
