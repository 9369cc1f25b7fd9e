"""Two `phalanx controller` replicas (manager.run, as the command runs it) against one
emulator, on virtual time: only the leader admits, the standby takes over when the
leader stops or cannot renew its Lease, and no gang is admitted or bound twice."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest
from kubernetes_asyncio import client

from controller.kube import manager
from controller.kube import resources as r
from controller.kube.informer import Informer
from controller.kube.manager import Replica
from controller.kube.rest import Obj, Rest
from controller.settings import RETRY_JITTER, Settings
from emulator import Emulator, Fault
from tests.kube.controller_cluster import add_node, gang_job, job, queue
from tests.kube.controller_env import create, emulator, load_crds, rest

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime

LEASE = {"lease_duration_seconds": 15, "renew_deadline_seconds": 10.0, "retry_period_seconds": 2.0}
SLOWEST_RETRY = LEASE["retry_period_seconds"] * (1 + RETRY_JITTER)
"""A standby's wait between attempts is at most this (retry period with jitter)."""


class Replicas:
    """Controllers started as `phalanx controller` starts one, each with its identity."""

    def __init__(self, conf: client.Configuration) -> None:
        self.conf = conf
        self.running: dict[str, Replica] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.terms: list[tuple[float, str, bool]] = []
        """(virtual time, identity, leading) at every change of leadership."""

    async def start(self, identity: str) -> Replica:
        settings = Settings.load(
            identity=identity,
            health_host="127.0.0.1",
            health_port=0,
            webhook_host="127.0.0.1",
            webhook_port=0,
            **LEASE,
        )

        def ready(replica: Replica) -> None:
            assert replica.elector is not None
            replica.elector.subscribe(
                lambda leading: self.terms.append((anyio.current_time(), identity, leading))
            )
            self.running[identity] = replica

        self.tasks[identity] = asyncio.create_task(manager.run(settings, self.conf, on_ready=ready))
        with anyio.fail_after(60):
            while identity not in self.running:
                await asyncio.sleep(0.05)
        replica = self.running[identity]
        await replica.caches.ready.wait()
        await replica.server.serving.wait()
        return replica

    async def stop(self, identity: str) -> None:
        task = self.tasks.pop(identity)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop_all(self) -> None:
        for identity in list(self.tasks):
            await self.stop(identity)


@pytest.fixture
async def replicas(emulator: Emulator, rest: Rest) -> AsyncIterator[Replicas]:
    await load_crds(emulator)
    await create(
        rest,
        r.NAMESPACES,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "phalanx-system"}},
    )
    await create(rest, r.QUEUES, queue())
    for i in range(4):
        await add_node(rest, f"n{i}", pods=110)
    group = Replicas(await manager.configuration(emulator.kubeconfig_path))
    yield group
    emulator.clear_faults()
    await group.stop_all()


class History:
    """What the API server saw, from the test's own watches: every admission id written
    to each GangJob, and every binding and creation of each pod."""

    def __init__(self, rest: Rest) -> None:
        self.admissions: dict[str, list[str]] = defaultdict(list)
        self.bindings: dict[str, list[str]] = defaultdict(list)
        self.pod_uids: dict[str, set[str]] = defaultdict(set)
        self.informers = [Informer(rest, r.GANG_JOBS), Informer(rest, r.PODS)]
        self.informers[0].add_handler(self._job)
        self.informers[1].add_handler(self._pod)

    def _job(self, kind: str, old: Obj | None, new: Obj) -> None:
        written = ((new.get("status") or {}).get("admission") or {}).get("admissionId")
        seen = self.admissions[new["metadata"]["name"]]
        if written and (not seen or seen[-1] != written):
            seen.append(written)

    def _pod(self, kind: str, old: Obj | None, new: Obj) -> None:
        name = new["metadata"]["name"]
        self.pod_uids[name].add(new["metadata"]["uid"])
        node = new["spec"].get("nodeName")
        if node and not ((old or {}).get("spec") or {}).get("nodeName"):
            self.bindings[name].append(node)


@pytest.fixture
async def history(rest: Rest) -> AsyncIterator[History]:
    seen = History(rest)
    tasks = [asyncio.create_task(i.run()) for i in seen.informers]
    yield seen
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def admitted_by(replica: Replica) -> float:
    found = replica.metrics.registry.get_sample_value(
        "phalanx_admission_attempts_total", {"outcome": "admitted"}
    )
    return found or 0.0


async def submit(rest: Rest, *names: str) -> None:
    for name in names:
        await create(rest, r.GANG_JOBS, gang_job(name, [("w", 2)]))


async def all_admitted(rest: Rest, *names: str) -> None:
    with anyio.fail_after(120):
        for name in names:
            while not ((await job(rest, name)).get("status") or {}).get("admission"):
                await asyncio.sleep(0.2)


async def leads(replica: Replica) -> float:
    """Wait until `replica` leads; the virtual seconds it took."""
    assert replica.elector is not None
    started = anyio.current_time()
    with anyio.fail_after(120):
        while not replica.elector.is_leader():
            await asyncio.sleep(0.05)
    return anyio.current_time() - started


async def readyz(replica: Replica) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{replica.server.port}/readyz") as answer,
    ):
        return answer.status


async def two_admitted_by_a(rest: Rest, replicas: Replicas) -> tuple[Replica, Replica]:
    """Replica a leads and admits j0 and j1 while b stands by."""
    a = await replicas.start("replica-a")
    await leads(a)
    b = await replicas.start("replica-b")
    await submit(rest, "j0", "j1")
    await all_admitted(rest, "j0", "j1")
    await asyncio.sleep(5)
    return a, b


async def two_more_admitted(rest: Rest) -> None:
    """j2 and j3 submitted and admitted, then time for any second admission to show."""
    await submit(rest, "j2", "j3")
    await all_admitted(rest, "j2", "j3")
    await asyncio.sleep(10)


def exactly_once(history: History, jobs: int) -> None:
    assert len(history.admissions) == jobs
    assert all(len(ids) == 1 for ids in history.admissions.values()), history.admissions
    assert len(history.bindings) == 2 * jobs
    assert all(len(nodes) == 1 for nodes in history.bindings.values()), history.bindings
    assert all(len(uids) == 1 for uids in history.pod_uids.values()), history.pod_uids


async def test_only_the_leader_admits_and_the_standby_is_ready(
    rest: Rest, replicas: Replicas, history: History
) -> None:
    a = await replicas.start("replica-a")
    await leads(a)
    b = await replicas.start("replica-b")
    await submit(rest, "j0", "j1", "j2")
    await all_admitted(rest, "j0", "j1", "j2")
    await asyncio.sleep(10)
    assert b.elector is not None and b.elector.state == "standby"
    assert (admitted_by(a), admitted_by(b)) == (3.0, 0.0)
    assert (await readyz(a), await readyz(b)) == (200, 200)
    leader_gauge = "phalanx_leader"
    assert a.metrics.registry.get_sample_value(leader_gauge) == 1.0
    assert b.metrics.registry.get_sample_value(leader_gauge) == 0.0
    exactly_once(history, 3)


async def test_a_cancelled_leader_releases_the_lease_and_the_standby_takes_over_at_once(
    rest: Rest, replicas: Replicas, history: History
) -> None:
    a, b = await two_admitted_by_a(rest, replicas)

    await replicas.stop("replica-a")
    took = await leads(b)
    assert took <= SLOWEST_RETRY
    await two_more_admitted(rest)
    assert (admitted_by(a), admitted_by(b)) == (2.0, 2.0)
    exactly_once(history, 4)
    print(f"takeover after a cancelled leader: {took:.2f} virtual s")


async def test_a_leader_whose_renewals_fail_is_replaced_within_one_lease_duration(
    rest: Rest, emulator: Emulator, replicas: Replicas, history: History
) -> None:
    a, b = await two_admitted_by_a(rest, replicas)

    emulator.inject_fault(Fault("update", "leases", code=500, agent="(replica-a)"))
    faulted_at = anyio.current_time()
    took = await leads(b)
    assert took <= LEASE["lease_duration_seconds"] + 2 * SLOWEST_RETRY
    a_stopped = next(t for t, who, leading in replicas.terms if who == "replica-a" and not leading)
    assert a_stopped - faulted_at <= LEASE["renew_deadline_seconds"]
    assert a_stopped < faulted_at + took, "the old leader stepped down before the new one led"
    await two_more_admitted(rest)
    assert a.elector is not None and not a.elector.is_leader()
    assert (admitted_by(a), admitted_by(b)) == (2.0, 2.0)
    exactly_once(history, 4)
    print(f"takeover after failing renewals: {took:.2f} virtual s from the fault")


async def test_readyz_answers_503_until_the_caches_have_synced(
    emulator: Emulator, replicas: Replicas
) -> None:
    emulator.inject_fault(Fault("*", "gangjobs", code=500))
    starting = asyncio.create_task(replicas.start("replica-a"))
    with anyio.fail_after(60):
        while "replica-a" not in replicas.running:
            await asyncio.sleep(0.05)
    a = replicas.running["replica-a"]
    await a.server.serving.wait()
    await asyncio.sleep(5)
    assert await readyz(a) == 503
    emulator.clear_faults()
    await starting
    assert await readyz(a) == 200
