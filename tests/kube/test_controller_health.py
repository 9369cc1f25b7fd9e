"""/metrics, /healthz and /readyz over real HTTP on an ephemeral port, on virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import anyio
import pytest

from controller.engine.state import ClusterState
from controller.kube.caches import ClusterCaches
from controller.kube.health import Check, HealthServer, readiness
from controller.kube.leader import LeaderElector, LeaseTiming
from controller.kube.metrics import CONTENT_TYPE, Metrics
from controller.kube.rest import Rest
from emulator import Emulator
from tests.kube.controller_env import emulator, load_crds, rest

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime

Serve = Callable[..., Awaitable[tuple[HealthServer, aiohttp.ClientSession]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start HealthServers on 127.0.0.1:0; each with a session pointed at it."""
    running: list[tuple[asyncio.Task[None], aiohttp.ClientSession]] = []

    async def start(
        metrics: Metrics | None = None, ready: dict[str, Check] | None = None
    ) -> tuple[HealthServer, aiohttp.ClientSession]:
        server = HealthServer(metrics or Metrics(), ready=ready)
        task = asyncio.create_task(server.run())
        await server.serving.wait()
        session = aiohttp.ClientSession(f"http://127.0.0.1:{server.port}")
        running.append((task, session))
        return server, session

    yield start
    for task, session in running:
        await session.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with http.get(path) as response:
        return response.status, await response.text()


async def test_metrics_serves_the_exposition_text(serve: Serve) -> None:
    metrics = Metrics()
    metrics.admission("admitted")
    _, http = await serve(metrics)
    async with http.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        text = await response.text()
    assert 'phalanx_admission_attempts_total{outcome="admitted"} 1.0' in text


async def test_healthz_is_ok_while_the_event_loop_turns(serve: Serve) -> None:
    _, http = await serve()
    await asyncio.sleep(120)
    assert await get(http, "/healthz") == (200, "ok\n")


async def test_healthz_fails_once_the_heartbeat_stalls(serve: Serve) -> None:
    server, http = await serve()
    server.last_beat = anyio.current_time() - 45
    status, text = await get(http, "/healthz")
    assert status == 503
    assert text.startswith("event loop: no heartbeat for 45.")


async def test_readyz_names_each_failing_check(serve: Serve) -> None:
    def broken() -> str | None:
        raise RuntimeError("no state")

    checks: dict[str, Check] = {
        "caches": lambda: "not synced yet",
        "fine": lambda: None,
        "broken": broken,
    }
    _, http = await serve(ready=checks)
    assert await get(http, "/readyz") == (
        503,
        "caches: not synced yet\nbroken: check failed: RuntimeError: no state\n",
    )


async def test_readyz_is_ok_when_every_check_passes(serve: Serve) -> None:
    _, http = await serve(ready={"caches": lambda: None})
    assert await get(http, "/readyz") == (200, "ok\n")


async def test_a_controller_is_ready_once_caches_synced_and_the_lease_was_read(
    serve: Serve, emulator: Emulator, rest: Rest
) -> None:
    await load_crds(emulator)
    caches = ClusterCaches(rest, ClusterState())
    elector = LeaderElector(
        rest, name="phalanx", namespace="default", identity="a", timing=LeaseTiming()
    )
    _, http = await serve(ready=readiness(caches, elector))
    status, text = await get(http, "/readyz")
    assert status == 503
    assert text.startswith(
        "caches: not synced yet (waiting for configmaps, deviceclasses, gangjobs, namespaces,"
    )
    assert text.endswith("leader election: lease not read yet\n")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(caches.run)
        tasks.start_soon(elector.run)
        with anyio.fail_after(60):
            await caches.ready.wait()
            while elector.state == "starting":
                await asyncio.sleep(0.1)
        assert await get(http, "/readyz") == (200, "ok\n")
        tasks.cancel_scope.cancel()
