"""`phalanx controller` freezes its heap once its caches synced (manager.run's
`on_synced`): the hook runs once, when the state built from every cache is there."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from controller.kube import manager
from controller.kube import resources as r
from controller.kube.manager import Replica
from controller.kube.rest import Rest
from controller.settings import Settings
from emulator import Emulator
from tests.kube.controller_cluster import add_node, gang_job, queue
from tests.kube.controller_env import create, emulator, load_crds, rest

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime


async def test_on_synced_runs_once_with_the_state_built_from_synced_caches(
    emulator: Emulator, rest: Rest
) -> None:
    await load_crds(emulator)
    await create(rest, r.QUEUES, queue(cpu=1))
    await add_node(rest, "n0")
    await create(rest, r.GANG_JOBS, gang_job("waits", [("w", 2)]))
    started: list[Replica] = []
    seen: list[tuple[bool, int]] = []

    def synced() -> None:
        caches = started[0].caches
        seen.append((caches.ready.is_set(), len(caches.state.pending)))

    settings = Settings.load(
        leader_elect=False, health_host="127.0.0.1", health_port=0, webhook_enabled=False
    )
    conf = await manager.configuration(emulator.kubeconfig_path)
    stop = asyncio.Event()
    task = asyncio.create_task(
        manager.run(settings, conf, stop=stop, on_ready=started.append, on_synced=synced)
    )
    with anyio.fail_after(60):
        while not seen:
            await asyncio.sleep(0.05)
    await asyncio.sleep(5)
    stop.set()
    await task
    assert seen == [(True, 1)]
