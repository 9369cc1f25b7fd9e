"""Leader election on a coordination.k8s.io/v1 Lease: one replica admits, the others wait.

The rules (client-go's, with a stricter leader side):
- A candidate takes the lease when it does not exist (create), when it has no holder (a
  released lease), or when the record has not changed for the holder's
  `leaseDurationSeconds` as measured on the candidate's own monotonic clock from the
  moment it first saw that record. Wall-clock times in the lease are written for people
  and other tools, never compared across machines, so clock skew cannot elect two.
- Every write is a PUT carrying the resourceVersion read, so of two candidates racing for
  one version exactly one wins; a 409 re-reads the lease and decides again.
- The leader renews every retry period. It leads only until `renew deadline` after the
  start of its last successful renewal: `is_leader()` turns false at that instant even if
  a request is hanging, and a standby (which saw that renewal no earlier than it started)
  can take over only after a full lease duration, which is longer. So two replicas never
  lead at once as long as their clocks run at the same rate.
- On shutdown the leader stops its work first, then releases the lease (holder cleared,
  duration 1 s) so a standby takes over at its next retry instead of after a lease
  duration. After a loss the elector campaigns again.

Why not kubernetes_asyncio.leaderelection (read in 36.1.0):
- Times: it writes `datetime.fromtimestamp()` (local, naive) and appends `Z`, so
  acquireTime/renewTime are off by the host's UTC offset; and when the microsecond is 0,
  `str(datetime)` has no fraction, its own parser rejects it and the time is silently not
  updated, a renewal that leaves renewTime where it was.
- It never writes leaseTransitions, and has no release: a leader that stops leaves its
  lease to expire, so a rolling update admits nothing for a full lease duration.
- `run()` returns after the first loss (no re-campaign), and deadlines use `time.time()`
  (a wall-clock step stretches or cuts leadership); a renewal request that hangs keeps
  the leading task running, because nothing bounds the request by the renew deadline.
- Every attempt is a GET then a PUT, also when leading, and every 409 is logged as an
  exception with a traceback, then waits a whole retry period before reading again.
- Its callbacks are coroutines with no ordering guarantee between stopping the leading
  work and giving up the lock. (Its Lease lock does PUT the object it read, so the
  resourceVersion precondition itself is there; its ConfigMap lock keeps the record in
  an annotation, which nothing else in Kubernetes reads.)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import anyio
import structlog

from controller.kube.resources import Resource
from controller.kube.rest import KubeError, Obj, Rest
from controller.settings import RETRY_JITTER

if TYPE_CHECKING:
    from controller.settings import Settings

LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)

_TRANSIENT = (KubeError, aiohttp.ClientError, OSError, TimeoutError, json.JSONDecodeError)

State = Literal["starting", "standby", "leader"]
Work = Callable[[], Coroutine[Any, Any, object]]
"""What runs while leading (the admission loop)."""


def microtime(moment: datetime) -> str:
    """A MicroTime as the API server accepts it: UTC, exactly 6 fraction digits."""
    if moment.tzinfo is None:
        raise ValueError(f"a MicroTime needs a time zone, got the naive time {moment}")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Seconds; Settings checks duration > renew_deadline > retry_period x 1.2."""

    duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass
class ElectionStats:
    """Counters for metrics and tests."""

    acquired: int = 0
    lost: int = 0
    conflicts: int = 0
    errors: int = 0


class LeaderElector:
    """Campaigns for one Lease; `run(work)` runs `work` only while leading."""

    def __init__(
        self,
        rest: Rest,
        *,
        name: str,
        namespace: str,
        identity: str,
        timing: LeaseTiming | None = None,
        wall_clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self.rest = rest
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.timing = timing or LeaseTiming()
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self.stats = ElectionStats()
        self.holder: str | None = None
        """The holder in the last lease read or written ("" once released)."""
        self._lease: Obj | None = None
        """The lease as last read or written; None when unknown (re-read before writing)."""
        self._seen = False
        self._observed_version = ""
        self._observed_at = 0.0
        self._leading = False
        self._deadline = float("-inf")
        self._callbacks: list[Callable[[bool], None]] = []
        self.log = structlog.get_logger("phalanx.leader").bind(
            lease=f"{namespace}/{name}", identity=identity
        )

    @classmethod
    def from_settings(cls, rest: Rest, settings: Settings, **options: Any) -> LeaderElector:
        timing = LeaseTiming(
            settings.lease_duration_seconds,
            settings.renew_deadline_seconds,
            settings.retry_period_seconds,
        )
        return cls(
            rest,
            name=settings.lease_name,
            namespace=settings.lease_namespace,
            identity=settings.identity,
            timing=timing,
            **options,
        )

    # ---- what the manager reads -------------------------------------------------------
    def is_leader(self) -> bool:
        """True while leading and within the renew deadline; check before every write that
        only the leader may make."""
        return self._leading and anyio.current_time() < self._deadline

    @property
    def state(self) -> State:
        """Starting until the lease was first read or written, then leader or standby."""
        if self.is_leader():
            return "leader"
        return "standby" if self._seen else "starting"

    def subscribe(self, callback: Callable[[bool], None]) -> None:
        """`callback(True)` on becoming leader, `callback(False)` on losing or stepping down
        (called before the leading work is cancelled)."""
        self._callbacks.append(callback)

    # ---- the loop ---------------------------------------------------------------------
    async def run(self, work: Work | None = None) -> None:
        """Campaign until cancelled. While leading, `work` runs; it is cancelled when the
        lease is lost (then the elector campaigns again) and on shutdown, where the lease
        is released only after `work` has ended."""
        try:
            while True:
                await self._campaign()
                self._step_up()
                async with anyio.create_task_group() as tasks:
                    if work is not None:
                        tasks.start_soon(work)
                    try:
                        await self._keep()
                    except BaseException:
                        self._step_down("shutdown")
                        raise
                    self._step_down("lost")
                    tasks.cancel_scope.cancel()
        finally:
            if self.holder == self.identity:
                with (
                    anyio.CancelScope(shield=True),
                    anyio.move_on_after(self.timing.renew_deadline),
                ):
                    await self._release()

    async def _campaign(self) -> None:
        """Until this candidate holds the lease."""
        while True:
            with anyio.move_on_after(self.timing.renew_deadline):
                if await self._try():
                    return
            jitter = 1.0 + RETRY_JITTER * self.rng.random()
            await anyio.sleep(self.timing.retry_period * jitter)

    async def _keep(self) -> None:
        """Renew every retry period; return once leadership is lost."""
        while True:
            await anyio.sleep(self.timing.retry_period)
            while True:
                remaining = self._deadline - anyio.current_time()
                if remaining <= 0:
                    return
                with anyio.move_on_after(remaining):
                    if await self._try():
                        break
                if self.holder not in (None, self.identity) or not self.is_leader():
                    return
                await anyio.sleep(
                    min(self.timing.retry_period, self._deadline - anyio.current_time())
                )

    def _step_up(self) -> None:
        self._leading = True
        self.stats.acquired += 1
        self.log.info("leading")
        self._notify(True)

    def _step_down(self, why: str) -> None:
        self._leading = False
        if why == "lost":
            self.stats.lost += 1
        self.log.warning("stopped leading", reason=why, holder=self.holder)
        self._notify(False)

    def _notify(self, leading: bool) -> None:
        for callback in self._callbacks:
            try:
                callback(leading)
            except Exception:
                self.log.exception("leadership callback failed", leading=leading)

    # ---- one attempt ------------------------------------------------------------------
    async def _try(self) -> bool:
        """Acquire or renew once; True if this candidate holds the lease afterwards."""
        started = anyio.current_time()
        try:
            if self._lease is None or not self._leading:
                await self._read()
            if self._lease is None:
                return await self._create(started)
            if await self._update(self._claim):
                self._deadline = started + self.timing.renew_deadline
                return True
            return False
        except _TRANSIENT as exc:
            self.stats.errors += 1
            self._lease = None
            self.log.warning("lease request failed", error=str(exc))
            return False

    def _claim(self, lease: Obj) -> Obj | None:
        """The spec that makes this candidate the holder, or None while another holds a
        lease that has not expired."""
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        mine = holder == self.identity
        if holder and not mine:
            duration = spec.get("leaseDurationSeconds") or self.timing.duration
            if anyio.current_time() < self._observed_at + duration:
                return None
        now = microtime(self.wall_clock())
        transitions = int(spec.get("leaseTransitions") or 0)
        return {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.timing.duration,
            "acquireTime": spec.get("acquireTime", now) if mine else now,
            "renewTime": now,
            "leaseTransitions": transitions if mine else transitions + 1,
        }

    def _released(self, lease: Obj) -> Obj | None:
        """The spec giving the lease up, or None when it is no longer ours."""
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return None
        now = microtime(self.wall_clock())
        rest = {k: v for k, v in spec.items() if k != "holderIdentity"}
        return {**rest, "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now}

    async def _update(self, decide: Callable[[Obj], Obj | None]) -> bool:
        """PUT `decide(lease)` with the lease's resourceVersion; on a 409 read the lease
        again and decide once more. False when `decide` declines or the race is lost."""
        for _ in range(2):
            if self._lease is None:
                return False
            spec = decide(self._lease)
            if spec is None:
                return False
            try:
                written = await self.rest.request(
                    "PUT", self._path(), body={**self._lease, "spec": spec}
                )
            except KubeError as exc:
                if exc.status != 409:
                    raise
                self.stats.conflicts += 1
                self.log.info("lease changed under us, reading it again")
                await self._read()
                continue
            self._observe(written)
            return True
        return False

    async def _create(self, started: float) -> bool:
        now = microtime(self.wall_clock())
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.timing.duration,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self.rest.request("POST", LEASES.path(self.namespace), body=lease)
        except KubeError as exc:
            if exc.status != 409:
                raise
            self.stats.conflicts += 1
            return False
        self._observe(created)
        self._deadline = started + self.timing.renew_deadline
        return True

    async def _read(self) -> None:
        try:
            lease = await self.rest.get(self._path())
        except KubeError as exc:
            if exc.status != 404:
                raise
            self._lease = None
            self._seen = True
            self.holder = None
            return
        self._observe(lease)

    def _observe(self, lease: Obj) -> None:
        """Remember the lease; a new resourceVersion restarts the expiry clock."""
        self._lease = lease
        self._seen = True
        self.holder = (lease.get("spec") or {}).get("holderIdentity") or ""
        version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = anyio.current_time()

    async def _release(self) -> None:
        """Give the lease up so a standby takes over at once (best effort)."""
        try:
            if await self._update(self._released):
                self.log.info("lease released")
        except _TRANSIENT as exc:
            self.log.warning("lease release failed", error=str(exc))

    def _path(self) -> str:
        return LEASES.path(self.namespace, self.name)
