"""Leader election on a Lease against the emulator over real HTTP, on virtual time."""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import anyio
import pytest

from controller.kube.leader import LEASES, LeaderElector, LeaseTiming, microtime
from controller.kube.rest import Obj, Rest
from emulator import Emulator, Fault
from tests.kube.controller_env import emulator, rest

__all__ = ["emulator", "rest"]

pytestmark = pytest.mark.looptime

TIMING = LeaseTiming(duration=15, renew_deadline=10.0, retry_period=2.0)
MICROTIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
EPOCH = datetime(2026, 12, 2, 5, 0, 0, tzinfo=UTC)
SLOWEST_RETRY = TIMING.retry_period * 2.2
"""A standby's wait between attempts is at most this (retry period with jitter)."""


def virtual_wall_clock() -> datetime:
    """Wall-clock time that moves with the loop's virtual time."""
    return EPOCH + timedelta(seconds=anyio.current_time())


class Counting(Rest):
    """A client that counts its requests and can be cut off (requests then hang, like a
    black-holed network) until healed."""

    def __init__(self, rest: Rest) -> None:
        super().__init__(rest.api_client)
        self.requests: list[str] = []
        self.healed = asyncio.Event()
        self.healed.set()

    def heal(self) -> None:
        self.healed.set()

    async def request(self, method: str, path: str, **options: Any) -> Obj:
        await self.healed.wait()
        self.requests.append(method)
        return await super().request(method, path, **options)


class Candidates:
    """Electors running in the test's background, each with its own client."""

    def __init__(self, rest: Rest) -> None:
        self.rest = rest
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.electors: dict[str, LeaderElector] = {}
        self.clients: dict[str, Counting] = {}
        self.events: list[tuple[float, str, str]] = []

    def start(self, identity: str, **options: Any) -> LeaderElector:
        client = self.clients.setdefault(identity, Counting(self.rest))
        options.setdefault("timing", TIMING)
        options.setdefault("wall_clock", virtual_wall_clock)
        elector = LeaderElector(
            client, name="phalanx", namespace="default", identity=identity, **options
        )
        elector.subscribe(
            lambda leading: self.events.append(
                (anyio.current_time(), identity, "leading" if leading else "stopped")
            )
        )
        self.electors[identity] = elector
        self.tasks[identity] = asyncio.create_task(elector.run(self._work(identity)))
        return elector

    def _work(self, identity: str) -> Callable[[], Any]:
        async def work() -> None:
            self.events.append((anyio.current_time(), identity, "work started"))
            try:
                await asyncio.Event().wait()
            finally:
                self.events.append((anyio.current_time(), identity, "work ended"))

        return work

    async def leader(self, identity: str, **options: Any) -> LeaderElector:
        """A candidate started where none leads, once it leads."""
        elector = self.start(identity, **options)
        await until(elector.is_leader)
        return elector

    async def stop(self, identity: str) -> None:
        task = self.tasks.pop(identity)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop_all(self) -> None:
        """Heal every client first: fixture teardown runs on real time."""
        for client in self.clients.values():
            client.heal()
        for identity in list(self.tasks):
            await self.stop(identity)


@pytest.fixture
async def candidates(rest: Rest) -> AsyncIterator[Candidates]:
    group = Candidates(rest)
    yield group
    await group.stop_all()


async def until(condition: Callable[[], bool], within: float = 120.0) -> float:
    """Poll on virtual time until `condition` holds; the virtual time it took."""
    start = anyio.current_time()
    with anyio.fail_after(within):
        while not condition():
            await asyncio.sleep(0.05)
    return anyio.current_time() - start


async def lease(rest: Rest) -> Obj:
    return await rest.get(LEASES.path("default", "phalanx"))


async def last_renewal(rest: Rest) -> float:
    """The virtual time of the lease's renewTime (see `virtual_wall_clock`)."""
    renewed = datetime.fromisoformat((await lease(rest))["spec"]["renewTime"])
    return (renewed - EPOCH).total_seconds()


def test_microtime_is_utc_with_exactly_six_fraction_digits() -> None:
    assert microtime(EPOCH) == "2026-12-02T05:00:00.000000Z"
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2026, 12, 2, 7, 0, 0, 123456, tzinfo=plus_two)
    assert microtime(moment) == "2026-12-02T05:00:00.123456Z"


def test_microtime_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="time zone"):
        microtime(datetime(2026, 12, 2))


async def test_the_first_candidate_creates_the_lease_and_leads(
    rest: Rest, candidates: Candidates
) -> None:
    elector = await candidates.leader("a", wall_clock=lambda: EPOCH)
    spec = (await lease(rest))["spec"]
    assert spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-12-02T05:00:00.000000Z",
        "renewTime": "2026-12-02T05:00:00.000000Z",
        "leaseTransitions": 0,
    }
    assert elector.state == "leader"


async def test_the_leader_renews_every_retry_period_with_one_request(
    rest: Rest, candidates: Candidates
) -> None:
    elector = await candidates.leader("a")
    first = (await lease(rest))["spec"]
    candidates.clients["a"].requests.clear()
    await asyncio.sleep(TIMING.retry_period * 3 + 0.5)
    spec = (await lease(rest))["spec"]
    assert candidates.clients["a"].requests == ["PUT"] * 3
    assert spec["acquireTime"] == first["acquireTime"]
    assert spec["renewTime"] > first["renewTime"]
    assert MICROTIME.fullmatch(spec["renewTime"])
    assert elector.is_leader()


async def test_a_standby_waits_while_the_leader_renews(rest: Rest, candidates: Candidates) -> None:
    leader = await candidates.leader("a")
    standby = candidates.start("b")
    await asyncio.sleep(TIMING.duration * 4)
    assert leader.is_leader()
    assert not standby.is_leader()
    assert standby.state == "standby"
    assert standby.holder == "a"


async def test_a_standby_takes_over_within_one_lease_duration_of_the_last_renewal(
    rest: Rest, candidates: Candidates
) -> None:
    leader = await candidates.leader("a")
    standby = candidates.start("b")
    await asyncio.sleep(TIMING.duration)
    candidates.clients["a"].healed.clear()  # the leader's requests now hang
    await asyncio.sleep(0.5)
    renewed_at = await last_renewal(rest)

    await until(standby.is_leader)
    took = anyio.current_time() - renewed_at
    assert took <= TIMING.duration + 2 * SLOWEST_RETRY
    assert not leader.is_leader()
    spec = (await lease(rest))["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    stopped_a = next(t for t, who, what in candidates.events if (who, what) == ("a", "stopped"))
    assert stopped_a <= renewed_at + TIMING.renew_deadline


async def test_on_shutdown_the_leader_stops_its_work_then_releases_the_lease(
    rest: Rest, candidates: Candidates
) -> None:
    await candidates.leader("a")
    standby = candidates.start("b")
    await asyncio.sleep(TIMING.duration)
    await candidates.stop("a")
    spec = (await lease(rest))["spec"]
    assert "holderIdentity" not in spec
    assert spec["leaseDurationSeconds"] == 1
    a_events = [what for _, who, what in candidates.events if who == "a"]
    assert a_events == ["leading", "work started", "stopped", "work ended"]

    took = await until(standby.is_leader)
    assert took <= SLOWEST_RETRY
    spec = (await lease(rest))["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)


async def test_a_deposed_leader_leaves_its_successors_lease_alone_on_shutdown(
    rest: Rest, candidates: Candidates
) -> None:
    await candidates.leader("a")
    standby = candidates.start("b")
    candidates.clients["a"].healed.clear()
    await until(standby.is_leader)
    candidates.clients["a"].heal()
    await candidates.stop("a")
    spec = (await lease(rest))["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("b", 15)
    assert standby.is_leader()


async def test_a_conflicting_write_is_re_read_and_the_leader_renews(
    rest: Rest, candidates: Candidates
) -> None:
    leader = await candidates.leader("a")
    await rest.request(
        "PATCH",
        LEASES.path("default", "phalanx"),
        body={"metadata": {"labels": {"touched": "yes"}}},
        content_type="application/merge-patch+json",
    )
    client = candidates.clients["a"]
    client.requests.clear()
    await asyncio.sleep(TIMING.retry_period + 0.5)
    assert client.requests == ["PUT", "GET", "PUT"]
    assert leader.stats.conflicts == 1
    assert leader.is_leader()
    renewed = await lease(rest)
    assert renewed["metadata"]["labels"] == {"touched": "yes"}
    assert renewed["spec"]["holderIdentity"] == "a"


async def test_a_leader_that_finds_another_holder_steps_down_then_campaigns_again(
    rest: Rest, candidates: Candidates
) -> None:
    leader = await candidates.leader("a")
    taken = await lease(rest)
    taken["spec"] |= {"holderIdentity": "intruder", "leaseTransitions": 1}
    await rest.request("PUT", LEASES.path("default", "phalanx"), body=taken)

    took = await until(lambda: not leader.is_leader())
    assert took <= TIMING.retry_period + 0.5
    assert [what for _, _, what in candidates.events][-2:] == ["stopped", "work ended"]

    took = await until(leader.is_leader)
    assert took <= TIMING.duration + 2 * SLOWEST_RETRY
    spec = (await lease(rest))["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("a", 2)
    assert leader.stats.acquired == 2
    assert leader.stats.lost == 1


async def test_failed_renewals_past_the_deadline_lose_leadership(
    rest: Rest, emulator: Emulator, candidates: Candidates
) -> None:
    leader = await candidates.leader("a")
    emulator.inject_fault(Fault("update", "leases", code=500))
    await asyncio.sleep(0.5)
    renewed_at = await last_renewal(rest)

    await until(lambda: not leader.is_leader())
    lost_at = anyio.current_time()
    assert lost_at <= renewed_at + TIMING.renew_deadline + 0.5
    assert leader.stats.errors >= 3

    emulator.clear_faults()
    await until(leader.is_leader)
    spec = (await lease(rest))["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("a", 0)


async def test_a_candidate_before_its_first_read_is_starting(
    rest: Rest, candidates: Candidates
) -> None:
    candidates.clients["a"] = cut = Counting(rest)
    cut.healed.clear()
    elector = candidates.start("a")
    await asyncio.sleep(TIMING.duration)
    assert elector.state == "starting"
    cut.healed.set()
    await until(lambda: elector.state == "leader")


# ---- random schedules -------------------------------------------------------------------

SCHEDULES = max(1, int(4 * float(os.environ.get("PROPERTY_EXAMPLES_SCALE", "1"))))


class Chaotic(Counting):
    """Requests and answers delayed at random (up to more than a renew deadline), some
    dropped as connection errors; `healed` cleared cuts the candidate off entirely."""

    def __init__(self, rest: Rest, rng: random.Random) -> None:
        super().__init__(rest)
        self.rng = rng
        self.calm = False

    def heal(self) -> None:
        super().heal()
        self.rng = random.Random(0)
        self.calm = True

    async def _lag(self) -> None:
        if not self.calm and self.rng.random() < 0.3:
            await asyncio.sleep(self.rng.uniform(0, 12))

    async def request(self, method: str, path: str, **options: Any) -> Obj:
        await self._lag()
        if not self.calm and self.rng.random() < 0.05:
            raise aiohttp.ClientConnectionError("chaos: connection reset")
        answer = await super().request(method, path, **options)
        await self._lag()
        return answer


@pytest.mark.parametrize("seed", range(SCHEDULES))
async def test_candidates_never_lead_at_once_under_random_schedules(
    rest: Rest, candidates: Candidates, seed: int
) -> None:
    """Three candidates whose requests lag, fail and get cut off at random, stopped and
    crashed at random (a crashed one cannot release). Leadership only begins when a
    candidate steps up, so checking the others at each step-up is exact."""
    rng = random.Random(seed)
    running: list[str] = []
    electors: list[LeaderElector] = []
    overlaps: list[str] = []
    born = 0

    def check(identity: str, leading: bool) -> None:
        others = [e.identity for e in electors if e.is_leader() and e.identity != identity]
        if leading and others:
            overlaps.append(f"{identity} leads at {anyio.current_time():.2f} while {others} do")

    def spawn() -> None:
        nonlocal born
        identity = f"c{born}"
        born += 1
        candidates.clients[identity] = Chaotic(rest, random.Random(rng.random()))
        elector = candidates.start(identity, rng=random.Random(rng.random()))
        elector.subscribe(lambda leading: check(identity, leading))
        electors.append(elector)
        running.append(identity)

    async def disrupt() -> None:
        while True:
            await asyncio.sleep(rng.uniform(1, 25))
            identity = rng.choice(running)
            client = candidates.clients[identity]
            action = rng.choice(["cut", "stop", "crash"])
            if action == "cut":
                client.healed.clear()
                await asyncio.sleep(rng.uniform(1, 40))
                client.healed.set()
                continue
            if action == "crash":
                client.healed.clear()  # it cannot release on the way out
            running.remove(identity)
            await candidates.stop(identity)
            spawn()

    for _ in range(3):
        spawn()
    chaos = asyncio.create_task(disrupt())
    await asyncio.sleep(600)
    chaos.cancel()
    await asyncio.gather(chaos, return_exceptions=True)
    assert overlaps == []
    terms = [what for _, _, what in candidates.events].count("leading")
    assert terms >= 5, "leadership moved between candidates several times"
