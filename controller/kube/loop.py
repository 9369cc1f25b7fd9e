"""The decision loop: admission cycles, the commit protocol per admission, and the
level-triggered reconcile of every GangJob (materialise, lifecycle, release).

Two kinds of work, both driven by the caches' watch events:

- Cycles. Any change to the cluster state wakes the cycle task (an event that cannot
  change a decision does not: `ClusterCaches.moves_engine`); events that arrive
  while a cycle runs are coalesced into the next one, and `CycleResult.wake_at` sets a
  timer. Each admission is committed at its commit point (the record, with a
  resourceVersion precondition); a conflict or a failed write rolls that gang back in
  the ledger, a success commits it. The caches hold the GangJob events of
  gangs being committed, so the state never drops a reservation mid-commit.
- Reconciles. Workers take GangJobs marked dirty (by their own events or those of their
  pods and claims) one at a time per job. From the job's record and the cached objects
  they: roll back a record that no longer holds; tear down what an earlier admission
  left; add the job's finalizer (before anything is made for the record: a job deleted
  sooner has nothing to release); create the headless Service, claims (their finalizer
  already set) and pods; allocate
  and reserve the claims; bind the pods; follow the pods to Running, Succeeded or
  Failed (restarting the gang up to maxRestarts); and release by clearing the record.
  Every step is idempotent, so a new leader simply reconciles every job again: that is
  the start-up roll-forward.

Lifecycle, also level-triggered from the reconcile: a gang on a node that is deleted, or
NotReady longer than the grace period, is evicted (Evicted) and requeued; a preempted gang
gets Preempted; in both cases, and when a gang is not all Ready within
`readyTimeoutSeconds`, is suspended, or is stopped because one of its pods failed, its
pods get the DisruptionTarget condition before they are deleted. A readiness timeout
requeues with capped exponential backoff, recorded in `status.requeueState`; the gang
stays out of the engine's pending set until `requeueAt`. Every timer is derived from what
the API objects hold, on the wall clock (`clock`), so a new leader resumes it where the
old one was: the readiness timeout from the Admitted condition's lastTransitionTime (and
the PodsReady condition once it is over), the NotReady grace from the Node's Ready
condition's lastTransitionTime, the backoff from `requeueAt`.

Queue status (usage, borrowed, pending and admitted counts) is written after changes,
at most once per `queue_status_gap`, and only for queues whose status differs.

Status follows Kubernetes conventions (conditions Queued, Admitted, Running, Succeeded,
Failed, Preempted, Evicted with reasons, lastTransitionTime and observedGeneration; the
engine's pending reason verbatim as the Queued message) and every condition change is also an Event.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import aiohttp
import structlog

from controller.engine.cycle import CycleResult, Decision, Engine
from controller.engine.ledger import Ledger
from controller.kube import drain, foreign
from controller.kube import foreign_commit as fc
from controller.kube import reconcile as rc
from controller.kube.backoff import Backoff
from controller.kube.caches import ClusterCaches
from controller.kube.commit import (
    ClaimStep,
    CommitBroken,
    CommitConflict,
    allocate_claim,
    bind,
    protect_claim,
    write_admission,
)
from controller.kube.informer import DELETED
from controller.kube.metrics import NO_METRICS, Recorder
from controller.kube.queue_status import queue_statuses, status_patch
from controller.kube.reconcile import Transition
from controller.kube.release import delete, delete_pod, disrupt_pod, release_claim
from controller.kube.resources import (
    CONFIG_MAPS,
    GANG_JOBS,
    PODS,
    QUEUES,
    RESOURCE_CLAIMS,
    Resource,
)
from controller.kube.rest import MERGE_PATCH, KubeError, Obj, Rest
from controller.kube.translate import (
    admission_of,
    admission_record,
    describe,
    with_shared_device_fields,
)

log = structlog.get_logger("phalanx.loop")

SERVICES = Resource("", "v1", "services", "Service", True)
EVENTS = Resource("events.k8s.io", "v1", "events", "Event", True)
T = TypeVar("T")
WRITE_ERRORS = (KubeError, aiohttp.ClientError, OSError, TimeoutError)
EVENTS_IN_FLIGHT = 4
"""Event posts at once: they are best effort, and must not crowd out the admissions
(a cold start's first cycle admits a thousand gangs, each with its Events)."""
REFUSED = (400, 422)
"""Answers to a claim's or a pod's write while materialising an admission that no retry
changes (the write is invalid as it stands): the admission is broken, as when someone
else's result is where ours should be (`CommitBroken`)."""
BROKEN_BACKOFF = (5.0, 300.0)
"""First and longest wait before a foreign gang whose admission broke is tried again."""
SWEEPS_IN_FLIGHT = 1
"""Deletions at once of what a released admission left that holds nothing any more (a
finished or unbound pod, a claim neither allocated nor reserved): they make room for no
one, so they go one at a time in the background, and the admission the release woke
(its commit point, pods, claims, bindings) does not queue behind a big gang's burst of
them on the API server."""


@dataclass
class LoopOptions:
    workers: int = 8
    """GangJobs reconciled at once."""
    writes_in_flight: int = 32
    """Concurrent API writes within one GangJob's reconcile."""
    min_cycle_gap: float = 0.0
    """Least seconds from one cycle's start to the next's, so a burst of events makes one
    cycle, not many."""
    instance: str = "phalanx"
    """`reportingInstance` of our Events (the pod name in a cluster)."""
    node_grace: float = 40.0
    """Seconds a node may be NotReady before the gangs on it are evicted."""
    requeue_backoff: tuple[float, float] = (10.0, 600.0)
    """First and longest wait before a gang released for not being ready is pending again."""
    queue_status_gap: float = 1.0
    """Seconds between Queue status writes; changes in between coalesce."""


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _key(obj: Obj) -> str:
    return GANG_JOBS.key(obj)


@dataclass
class _Work:
    """Dirty GangJob keys: each is reconciled by one worker at a time."""

    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    queued: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)
    again: set[str] = field(default_factory=set)

    def add(self, key: str) -> None:
        if key in self.active:
            self.again.add(key)
        elif key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)


class Controller:
    """The decision loop over one ClusterCaches and Engine. `run()` until cancelled."""

    def __init__(
        self,
        rest: Rest,
        caches: ClusterCaches,
        engine: Engine,
        *,
        options: LoopOptions | None = None,
        is_leader: Callable[[], bool] | None = None,
        metrics: Recorder = NO_METRICS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if engine.state is not caches.state:
            raise ValueError("the engine must decide on the caches' state")
        self.rest = rest
        self.caches = caches
        self.engine = engine
        self.options = options or LoopOptions()
        self.is_leader = is_leader or (lambda: True)
        self.metrics = metrics
        self.clock = clock
        self.cycles = 0
        self._changed = asyncio.Event()
        self._work = _Work()
        self._wake_at: float | None = None
        self._commit_backoff = Backoff(initial=0.2, cap=10.0)
        self._pause = 0.0
        self._retries: dict[str, Backoff] = {}
        self._not_ready_since: dict[str, float] = {}
        """Nodes NotReady whose Ready condition has no lastTransitionTime: when this
        replica first saw them so (`clock` seconds)."""
        self._unparking: dict[str, asyncio.TimerHandle] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._draining: dict[str, str] = {}
        """Work keys of admitted gangs waiting for others to let go of their nodes and
        devices (drain.py), with the reason; reconciled again when a pod or claim does."""
        self._queued_at: dict[str, tuple[str, float]] = {}
        """Admitted gang uid -> (admission id, when it was last queued), until all its
        pods are bound: the start of its admission latency."""
        self._queues_changed = asyncio.Event()
        self._unseen: set[str] = set()
        """Pending gangs whose Queued status waits for the next cycle's verdict."""
        self._cycled: set[str] = set()
        """Pending gangs a cycle has passed over without a reason (written as waiting)."""
        self._services: set[str] = set()
        """GangJobs (by uid) whose headless Service this leader made or found."""
        self._foreign_bound: dict[str, str] = {}
        """Foreign gangs (by uid) whose admission (this id) was seen with every pod bound."""
        self._broken: dict[str, Backoff] = {}
        """Foreign gangs (by uid) whose admissions broke, until one is bound whole: the
        wait before the next try grows with each."""
        self._bound: dict[str, str] = {}
        """Pods (by uid) this leader bound whose event has not shown it yet: their node."""
        self._background: set[asyncio.Task[None]] = set()
        self._event_slots = asyncio.Semaphore(EVENTS_IN_FLIGHT)
        """Event posts in flight (see `_events`); cancelled when `run` ends."""
        self._sweep_slots = asyncio.Semaphore(SWEEPS_IN_FLIGHT)
        self._sweeping: set[str] = set()
        """Objects (plural/namespace/name/uid) whose background deletion is under way."""
        for plural, informer in caches.informers.items():
            informer.add_handler(self._on_event(plural))

    # ---- events ------------------------------------------------------------------------
    def _on_event(self, plural: str) -> Callable[[str, Obj | None, Obj], None]:
        def handler(kind: str, old: Obj | None, new: Obj) -> None:
            evicting = plural == "nodes" and self._on_node(kind, new)
            if self.caches.moves_engine(plural, kind, old, new) and not evicting:
                self._changed.set()
            self._queues_changed.set()
            if plural == "gangjobs":
                if kind == DELETED:
                    self._forget(_key(new), str(_meta(new).get("uid")))
                else:
                    self._work.add(_key(new))
            elif plural == "configmaps":
                group = foreign.group_of_record(new)
                if group is not None:
                    self._foreign_work(group)
            elif plural in ("pods", "resourceclaims"):
                if (
                    plural == "pods"
                    and self._bound
                    and (kind == DELETED or (new.get("spec") or {}).get("nodeName"))
                ):
                    self._bound.pop(str(_meta(new).get("uid")), None)
                for group in sorted(self.caches.foreign_groups(plural, new)):
                    if not self._nothing_to_bind(group, plural, kind, old, new):
                        self._foreign_work(group)
                for ref in _meta(new).get("ownerReferences") or ():
                    if ref.get("kind") == "GangJob" and ref.get("controller"):
                        self._work.add(f"{_meta(new).get('namespace')}/{ref.get('name')}")
                if self._draining and _lets_go(plural, kind, new):
                    for key in list(self._draining):
                        self._work.add(key)

        return handler

    def _foreign_work(self, group: foreign.Group) -> None:
        """Reconcile a foreign gang, or forget it if the caches did (nothing left of it)."""
        if group.uid in self.caches.foreign.groups:
            self._work.add(group.uid)
        else:
            self._forget(group.uid, group.uid)

    def _forget(self, key: str, uid: str) -> None:
        """Drop what this loop keeps for a gang that is gone (a GangJob deleted, a foreign
        gang without pods or record): its timers, retries and latency and status marks."""
        for timers in (self._timers, self._unparking):
            timer = timers.pop(key if timers is self._timers else uid, None)
            if timer is not None:
                timer.cancel()
        self._retries.pop(key, None)
        self._draining.pop(key, None)
        self._queued_at.pop(uid, None)
        self._foreign_bound.pop(uid, None)
        self._broken.pop(uid, None)
        self._services.discard(uid)
        self._cycled.discard(uid)
        self._unseen.discard(uid)

    def bookkeeping(self) -> dict[str, int]:
        """The size of every per-gang and per-object structure of the loop and its caches
        (all 0 once no gang is left and no work is under way)."""
        return {
            "retries": len(self._retries),
            "not_ready_since": len(self._not_ready_since),
            "unparking": len(self._unparking),
            "timers": len(self._timers),
            "draining": len(self._draining),
            "queued_at": len(self._queued_at),
            "unseen": len(self._unseen),
            "cycled": len(self._cycled),
            "services": len(self._services),
            "foreign_bound": len(self._foreign_bound),
            "broken": len(self._broken),
            "bound": len(self._bound),
            "sweeping": len(self._sweeping),
            "background": len(self._background),
            **{f"caches.{k}": v for k, v in self.caches.bookkeeping().items()},
        }

    def _nothing_to_bind(
        self, group: foreign.Group, plural: str, kind: str, old: Obj | None, new: Obj
    ) -> bool:
        """Whether an event of a foreign gang's pod or claim leaves its reconcile nothing to
        do: every pod of the gang's admission was seen bound (a pod's node never changes)
        and the event is an update of a pod or claim of that admission that neither replaces
        (a new uid) nor moves the pod. A reconcile would plan the whole gang again to find
        no step (kubelet's status updates of a starting or finishing gang of N pods would
        cost N plans of N pods)."""
        gangs = self.caches.foreign
        admission = gangs.admission_ids.get(group.uid)
        if admission is None or self._foreign_bound.get(group.uid) != admission:
            return False
        if kind == DELETED or old is None:
            return False
        key = (PODS if plural == "pods" else RESOURCE_CLAIMS).key(new)
        if not gangs.is_ours(plural, key):
            return False
        if plural != "pods":
            return True
        return _meta(old).get("uid") == _meta(new).get("uid") and foreign.group_of(
            old
        ) == foreign.group_of(new)

    def _on_node(self, kind: str, node: Obj) -> bool:
        """A node deleted or not Ready: reconcile the admitted gangs with pods there.
        True if GangJobs there are evicted at once (no grace): their releases wake the
        cycle, which would find nothing to do before them (a simulated failure takes the
        node and its gangs away in one step, and a cycle between would cost a gap)."""
        name = str(_meta(node).get("name"))
        if kind == DELETED or rc.node_ready(node):
            self._not_ready_since.pop(name, None)
        if kind != DELETED and rc.node_ready(node):
            return False
        evicted = False
        for uid, reservation in self.caches.state.admitted.items():
            if any(p.node == name for p in reservation.pods):
                self._dirty_uid(uid)
                evicted |= uid not in self.caches.foreign.groups
        return evicted and (kind == DELETED or self.options.node_grace <= 0)

    def _recheck(self, key: str, delay: float) -> None:
        """Reconcile `key` again in `delay` seconds (one timer per job)."""
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._timer_fired, key)

    def _timer_fired(self, key: str) -> None:
        self._timers.pop(key, None)
        self._work.add(key)

    def _dirty_uid(self, uid: str) -> None:
        if uid in self.caches.foreign.groups:
            self._work.add(uid)
            return
        job = self.caches.gang_job(uid)
        if job is not None:
            self._work.add(_key(job))

    # ---- running -----------------------------------------------------------------------
    async def run(self) -> None:
        """Wait for the caches, then cycle and reconcile until cancelled."""
        await self.caches.ready.wait()
        log.info("caches ready: reconciling every GangJob and admitted foreign gang")
        for job in list(self.caches.cache("gangjobs").values()):
            self._work.add(_key(job))
        for group in self.caches.foreign.all_groups():
            self._work.add(group.uid)  # roll forward (or tear down) what a crash left
        self._changed.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._cycles())
                tasks.create_task(self._queue_statuses())
                for _ in range(self.options.workers):
                    tasks.create_task(self._worker())
        finally:
            for task in list(self._background):
                task.cancel()

    async def _cycles(self) -> None:
        while True:
            timeout = None if self._wake_at is None else max(0.0, self._wake_at - self.clock())
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                self._wake_at = None
            self._changed.clear()
            if not self.is_leader():
                continue
            began = asyncio.get_running_loop().time()
            await self.cycle()
            self._queues_changed.set()
            # the least gap runs from the cycle's start (the simulator's `cycleInterval`),
            # so the time its commits took counts towards it
            gap = began + self.options.min_cycle_gap - asyncio.get_running_loop().time()
            pause, self._pause = max(self._pause, gap), 0.0
            if pause > 0:
                await asyncio.sleep(pause)  # a failing API server is not hammered

    async def _worker(self) -> None:
        work = self._work
        while True:
            key = await work.queue.get()
            work.queued.discard(key)
            work.active.add(key)
            try:
                if self.is_leader():
                    await self.reconcile(key)
                self._retries.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._retries.setdefault(key, Backoff(initial=0.5)).next_delay(
                    exc.retry_after or 0.0 if isinstance(exc, KubeError) else 0.0
                )
                log.warning("reconcile failed", job=key, error=str(exc), retry_in=round(delay, 2))
                asyncio.get_running_loop().call_later(delay, work.add, key)
            finally:
                work.active.discard(key)
                if key in work.again:
                    work.again.discard(key)
                    work.add(key)

    # ---- cycles and the commit point -----------------------------------------------------
    async def cycle(self) -> CycleResult:
        """One admission cycle and the commit point of each admission it makes; its
        duration is measured on the event loop's clock (it waits for the API), the
        decide step's on the CPU's performance counter."""
        began = asyncio.get_running_loop().time()
        started = time.perf_counter()
        unseen, self._unseen = self._unseen, set()
        result = self.engine.cycle(now=self.clock())
        decided = time.perf_counter() - started
        pending = self.caches.state.pending
        self._cycled.update(uid for uid in unseen if uid in pending)
        self.cycles += 1
        try:
            await self._commit_all(result)
        finally:
            seconds = asyncio.get_running_loop().time() - began
            self.metrics.cycle_done(result, decided, seconds)
            # The gangs left pending get their status after the admissions are written
            # (those are what the next cycle waits for); the admitted ones once each is.
            done = {d.gang_uid for d in result.admitted}
            for uid in unseen:
                if uid not in done:
                    self._dirty_uid(uid)
            for decision in result.decisions:
                if decision.gang_uid not in done:
                    self._dirty_uid(decision.gang_uid)
        return result

    async def _commit_all(self, result: CycleResult) -> None:
        """The commit point of every admission of a cycle."""
        self._wake_at = result.wake_at
        for fault in result.faults:
            log.error("policy fault", fault=fault)
        admitted = result.admitted
        if not admitted:
            return
        held = [d.gang_uid for d in admitted] + [v for d in admitted for v in d.victims]
        self.caches.hold(held)
        released: set[str] = set()

        def release(uid: str) -> None:
            """Stop holding; reconcile once the caches have taken the outcome."""
            if uid not in released:
                released.add(uid)
                self.caches.unhold(uid)
                self._dirty_uid(uid)

        async def commit(decision: Decision) -> None:
            """A gang without victims is materialised as soon as its own record is
            written, not once the whole cycle's are."""
            try:
                await self._commit(decision, result.ledger)
            finally:
                release(decision.gang_uid)

        try:
            if any(d.victims for d in admitted):
                for decision in admitted:  # in ledger order: rollbacks may cascade
                    if result.ledger.is_open(decision.gang_uid):
                        await self._commit(decision, result.ledger)
            else:
                await self._each(admitted, commit)
        finally:
            for uid in held:
                release(uid)
        for uid in result.ledger.unrestorable:
            self._dirty_uid(uid)

    async def _commit(self, decision: Decision, ledger: Ledger) -> None:
        uid = decision.gang_uid
        if uid in self.caches.foreign.groups:
            await self._commit_foreign(decision, ledger)
            return
        job = self.caches.gang_job(uid)
        assert decision.reservation is not None
        try:
            if job is None:
                raise CommitConflict("the GangJob is gone")
            await self._evict(decision.victims, describe("GangJob", job))
            record = with_shared_device_fields(
                admission_record(decision.reservation, secrets.token_hex(8))
            )
            transitions = [
                Transition(rc.QUEUED, False, "Admitted", decision.reason),
                Transition(rc.ADMITTED, True, "Admitted", decision.reason),
                *_clear(
                    job, (rc.PREEMPTED, rc.EVICTED, rc.PODS_READY), "Admitted", decision.reason
                ),
            ]
            conditions, changed = rc.with_conditions(job, transitions, self._now())
            written = await write_admission(
                self.rest, job, record, {"phase": "Admitted", "conditions": conditions}
            )
        except (CommitConflict, *WRITE_ERRORS) as exc:
            self._rolled_back(uid, ledger, exc)
            return
        ledger.commit(uid)
        self._commit_backoff.reset()
        self.metrics.admission("admitted")
        self._latency_from(uid, record["admissionId"], lambda: rc.queued_since(job))
        self.caches.assume(GANG_JOBS, written)
        await self._events(written, changed)

    def _rolled_back(self, uid: str, ledger: Ledger, exc: Exception) -> None:
        """A commit point lost (conflict) or failed: the reservation is rolled back and
        the gang decided again in a later cycle, after a capped backoff that only an
        admission resets. A conflict backs off too: most pass at once, but one that
        persists (a victim whose record keeps changing, say) would otherwise make the
        same decision fail again in a tight loop."""
        undone = ledger.rollback(uid)
        self.metrics.admission("conflict" if isinstance(exc, CommitConflict) else "error")
        log.info("admission rolled back", gang=uid, undone=undone, error=str(exc))
        self._changed.set()
        retry_after = exc.retry_after if isinstance(exc, KubeError) else None
        self._pause = max(self._pause, self._commit_backoff.next_delay(retry_after or 0.0))

    async def _evict(self, victims: Iterable[str], preemptor: str) -> None:
        """Release every victim of a preemption (GangJobs and foreign gangs), their pods
        marked DisruptionTarget first; `CommitConflict` if one changed meanwhile."""
        why = f"preempted for {preemptor}"
        for victim in victims:
            if victim in self.caches.foreign.groups:
                queue = await self._release_foreign(victim, "Preempted", why)
            else:
                evicted = self.caches.gang_job(victim)
                queue = None
                if evicted is not None and await self._release(
                    evicted,
                    "Pending",
                    [
                        Transition(rc.PREEMPTED, True, "Preempted", why, True),
                        *_requeue("Preempted", why),
                    ],
                    disruption=(rc.PREEMPTION_BY_SCHEDULER, why),
                ):
                    queue = str((evicted.get("spec") or {}).get("queueName", ""))
                    # what its pods and claims still hold counts as others' from now on,
                    # so the preemptor waits for them (drain.py)
                    self.caches.refresh_gang(victim)
            if queue is None:
                raise CommitConflict(f"victim {victim} changed")
            self.metrics.preempted(queue)

    async def _release_foreign(
        self, uid: str, reason: str, why: str, retry_at: float | None = None
    ) -> str | None:
        """A foreign gang's release up to its commit point (foreign_commit.py), for an
        eviction (`Preempted`) or a broken admission (`foreign.BROKEN`, tried again from
        `retry_at`): the pods it takes down marked DisruptionTarget, then the record
        marked released. Its queue, or None if its record changed or is gone."""
        gangs = self.caches.foreign
        group, found = gangs.groups.get(uid), gangs.members.get(uid)
        obj, written = (None, None) if group is None else gangs.record(group)
        if obj is None or written is None or found is None:
            return None
        if foreign.released(written) is not None:
            return None
        await self._disrupt(self._taken_down(found.group.namespace, written, reason), why)
        try:
            made = await fc.release_record(self.rest, obj, written, reason, why, retry_at)
        except CommitConflict:
            return None
        self.caches.assume(CONFIG_MAPS, made)
        log.info("foreign gang released", gang=uid, reason=reason, why=why)
        return found.gang.queue

    def _recorded_live(self, namespace: str, written: Obj) -> list[Obj]:
        """The live pods (same name and uid) a foreign gang's record admitted."""
        cached = self.caches.cache("pods")
        out = []
        for name, uid in foreign.recorded_pods(written):
            pod = cached.get(f"{namespace}/{name}")
            if pod is not None and str(_meta(pod).get("uid")) == uid:
                out.append(pod)
        return out

    def _taken_down(self, namespace: str, written: Obj, reason: str) -> list[Obj]:
        """The live pods a foreign gang's record admitted that its release takes down:
        all of them, or for a broken admission those bound (a binding cannot be undone;
        the others are left to be admitted again)."""
        return [
            p
            for p in self._recorded_live(namespace, written)
            if reason != foreign.BROKEN or (p.get("spec") or {}).get("nodeName")
        ]

    async def _broken_foreign(self, uid: str, why: str) -> None:
        """An admitted foreign gang that cannot be materialised (`CommitBroken`): handled
        as a GangJob's broken admission is, by the release's commit point (the record
        marked released), after which the tear-down rolls back what was written (bound
        pods deleted, claims deallocated) and the engine holds nothing of it; the record
        stays, keeping the gang out of the queue, until a backoff that grows with each
        broken admission ends. Said by an Event on its PodGroup, or on each of its pods."""
        delay = self._broken.setdefault(uid, Backoff(*BROKEN_BACKOFF)).next_delay()
        message = f"admission broken, rolled back and tried again in {delay:.0f} s: {why}"
        log.error("foreign gang admission broken", gang=uid, error=why, retry_in=round(delay))
        gangs = self.caches.foreign
        group, found = gangs.groups.get(uid), gangs.members.get(uid)
        pod_group = None if group is None else gangs.pod_group(group)
        if await self._release_foreign(uid, foreign.BROKEN, message, self.clock() + delay) is None:
            return  # the record changed meanwhile: its event reconciles the gang again
        regarding = ("v1", "Pod")
        about = list((found.pods if found is not None else {}).values())
        if pod_group is not None:
            regarding, about = ("scheduling.k8s.io/v1alpha2", "PodGroup"), [pod_group]
        change = [Transition(rc.ADMITTED, False, foreign.BROKEN, message, True)]
        for obj in about:
            await self._events(obj, change, regarding)

    async def _disrupt(self, pods: list[Obj], why: str) -> None:
        """Mark the pods a foreign gang's release takes down DisruptionTarget, all at one time."""
        now = self._now()
        await self._each(
            pods, lambda p: disrupt_pod(self.rest, p, rc.PREEMPTION_BY_SCHEDULER, why, now)
        )

    async def _tear_down_foreign(self, group: foreign.Group, obj: Obj, written: Obj) -> None:
        """What a released record (an evicted foreign gang) still holds: its pods marked
        and deleted, its claims deallocated once their pods are done; then the record
        deleted. Every step idempotent, so a new leader resumes it."""
        namespace = group.namespace
        released = foreign.released(written) or {}
        why, reason = str(released.get("message", "")), str(released.get("reason", ""))
        pods = self._taken_down(namespace, written, reason)
        await self._disrupt(pods, why)
        await self._each(pods, lambda p: delete_pod(self.rest, p))
        cached_pods, cached_claims = self.caches.cache("pods"), self.caches.cache("resourceclaims")
        mine = foreign.recorded_uids(written)

        def pod_of(consumer: Obj) -> Obj | None:
            pod = cached_pods.get(f"{namespace}/{consumer.get('name')}")
            if pod is None or _meta(pod).get("uid") != consumer.get("uid"):
                return None
            if reason == foreign.BROKEN and consumer.get("uid") in mine:
                # a pod of a broken admission that was never bound uses nothing yet
                return pod if (pod.get("spec") or {}).get("nodeName") else None
            return pod

        async def claim_step(claim: Obj) -> bool:
            try:
                return await release_claim(self.rest, claim, pod_of, delete_it=False, mine=mine)
            except KubeError as exc:
                if exc.status not in (404, 409):
                    raise
                return False

        names = foreign.recorded_claims(written)
        if reason == foreign.BROKEN:
            # and the claims of other gangs its pods joined: they leave their reservedFor
            live = self._recorded_live(namespace, written)
            names |= {k.partition("/")[2] for p in live for k in foreign.named_claim_keys(p)}
        claims = [
            c
            for name in sorted(names)
            if (c := cached_claims.get(f"{namespace}/{name}")) is not None
        ]
        let_go = await self._each(claims, claim_step)
        if not all(let_go) or not all(rc.pod_done(p) for p in pods):
            return
        retry_at = foreign.retry_at(written)
        if retry_at is not None and retry_at > self.clock():
            self._recheck(group.uid, retry_at - self.clock())
            return
        meta = _meta(obj)
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
        }
        try:
            await self.rest.request("DELETE", CONFIG_MAPS.path(namespace, meta["name"]), body=body)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise
        log.info("evicted foreign gang torn down", gang=group.uid)

    async def _commit_foreign(self, decision: Decision, ledger: Ledger) -> None:
        """The commit point of a foreign gang: its record ConfigMap (foreign.py)."""
        uid, gangs = decision.gang_uid, self.caches.foreign
        found = gangs.members.get(uid)
        assert decision.reservation is not None
        try:
            if found is None:
                raise CommitConflict("the gang changed")
            await self._evict(decision.victims, f"gang {found.group.uid}")
            group = found.group
            current = gangs.record_object(group)
            written = foreign.record(found, decision.reservation, secrets.token_hex(8))
            manifest = foreign.record_object(found, written, current, gangs.pod_group(group))
            made = await fc.write_record(self.rest, manifest, replacing=current is not None)
        except (CommitConflict, *WRITE_ERRORS) as exc:
            self._rolled_back(uid, ledger, exc)
            return
        ledger.commit(uid)
        self._commit_backoff.reset()
        self.metrics.admission("admitted")
        pods = list(found.pods.values())
        self._latency_from(uid, written["admissionId"], lambda: max(map(rc.created, pods)))
        self.caches.assume(CONFIG_MAPS, made)
        log.info("foreign gang admitted", gang=uid, pods=len(found.pods))

    async def _reconcile_foreign(self, uid: str) -> None:
        """Allocate the claims and bind the pods of an admitted foreign gang, or tear
        down what an evicted one still holds."""
        gangs = self.caches.foreign
        group = gangs.groups.get(uid)
        obj, written = (None, None) if group is None else gangs.record(group)
        if group and obj and written and foreign.released(written) is not None:
            await self._tear_down_foreign(group, obj, written)
            return
        found, reservation = gangs.members.get(uid), self.caches.state.admitted.get(uid)
        if reservation is None:
            self._queued_at.pop(uid, None)  # released (or never admitted)
            self._foreign_bound.pop(uid, None)
            self._draining.pop(uid, None)
        if found is None or reservation is None or uid not in gangs.admission_ids:
            return
        steps, bindings = fc.plan(
            found, reservation, self.caches.cache("pods"), self.caches.cache("resourceclaims")
        )
        if not steps and not bindings:
            self._all_bound(uid, gangs.admission_ids[uid])
            self._foreign_bound[uid] = gangs.admission_ids[uid]
            self._broken.pop(uid, None)
            return
        if self._still_held(uid, uid):
            return
        # the steps of one claim (pods sharing it join its reservedFor) one after another
        by_claim: dict[str, list[ClaimStep]] = {}
        for step in steps:
            by_claim.setdefault(RESOURCE_CLAIMS.key(step.claim), []).append(step)

        async def in_turn(claim_steps: list[ClaimStep]) -> None:
            for step in claim_steps:
                await self._protect_and_allocate(step)

        try:
            await self._each(list(by_claim.values()), in_turn)
            await self._each(bindings, lambda pn: self._bind(pn[0], pn[1]))
        except CommitBroken as exc:
            await self._broken_foreign(uid, str(exc))

    async def _protect_and_allocate(self, step: ClaimStep) -> None:
        meta = _meta(step.claim)
        try:
            try:
                claim = await protect_claim(self.rest, step.claim)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                fresh = await self.rest.get(RESOURCE_CLAIMS.path(meta["namespace"], meta["name"]))
                claim = await protect_claim(self.rest, fresh)
            await self._allocate(ClaimStep(claim, step.results, step.pod, step.node))
        except KubeError as exc:
            if exc.status not in REFUSED:
                raise
            where = f"ResourceClaim {meta['namespace']}/{meta['name']}"
            raise CommitBroken(f"{where} refused: {exc.message}") from exc

    async def _ensure_finalizer(self, job: Obj) -> Obj | None:
        """The job with our finalizer (added if missing); None if the job changed or is
        gone meanwhile (its next event brings the reconcile back)."""
        meta = _meta(job)
        finalizers = list(meta.get("finalizers") or ())
        if rc.JOB_FINALIZER in finalizers:
            return job
        body = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "finalizers": [*finalizers, rc.JOB_FINALIZER],
            }
        }
        try:
            written = await self.rest.request(
                "PATCH",
                GANG_JOBS.path(meta["namespace"], meta["name"]),
                body=body,
                content_type=MERGE_PATCH,
            )
        except KubeError as exc:
            if exc.status in (404, 409):
                return None
            raise
        self.caches.assume(GANG_JOBS, written)
        return written

    # ---- reconcile -----------------------------------------------------------------------
    async def reconcile(self, key: str) -> None:
        """Bring one GangJob's objects and status in line with its record (or materialise
        a foreign gang's admission)."""
        if foreign.is_gang_uid(key):
            await self._reconcile_foreign(key)
            return
        job = self.caches.cache("gangjobs").get(key)
        if job is None:
            return
        meta, spec = _meta(job), job.get("spec") or {}
        status = job.get("status") or {}
        uid = str(meta["uid"])
        record = status.get("admission")
        admission = str(record["admissionId"]) if record else None
        pods, claims = self.caches.owned(uid)
        if record:
            lost = self.caches.unrestorable.get(uid)
            if lost is not None:
                await self._release(job, "Pending", [*_requeue("AdmissionLost", lost)])
                return
            if meta.get("deletionTimestamp") or spec.get("suspend"):
                why = "Deleted" if meta.get("deletionTimestamp") else "Suspended"
                phase = status.get("phase") if why == "Deleted" else "Suspended"
                message = f"the GangJob was {why.lower()}"
                await self._release(
                    job,
                    phase,
                    [Transition(rc.ADMITTED, False, why, message)],
                    disruption=None if why == "Deleted" else (rc.SUSPENDED, message),
                )
                return
            gone = self._node_lost(key, record)
            if gone is not None:
                reason, message = gone
                await self._release(
                    job,
                    "Pending",
                    [
                        Transition(rc.EVICTED, True, reason, message, True),
                        *_requeue(reason, message),
                    ],
                    disruption=(rc.NODE_LOST, message),
                )
                return
        stale_pods = [p for p in pods if admission_of(p) != admission]
        stale_claims = [c for c in claims if admission_of(c) != admission]
        await self._tear_down(key, stale_pods, stale_claims, sweep=not record)
        if meta.get("deletionTimestamp"):
            await self._finish_deletion(job)
            return
        if not record:
            self._draining.pop(key, None)  # released: nothing of it waits to be bound
            self._backoff_ends(job)
            await self._pending_status(job)
            return
        if uid not in self.caches.state.admitted or self.caches.admission_ids.get(uid) != admission:
            return  # the caches have not taken the record yet; its event will come back here
        mine = [p for p in pods if admission_of(p) == admission]
        if await self._ready_timeout(job, mine):
            return
        protected = await self._ensure_finalizer(job)
        if protected is None:
            return
        current = await self._materialise(protected, mine)
        if current is not None:
            self._all_bound(uid, str(record["admissionId"]))
            await self._follow(protected, current)

    def _latency_from(self, uid: str, admission: str, start: Callable[[], float]) -> None:
        """Remember when an admitted gang was queued (an unreadable time: not observed)."""
        try:
            self._queued_at[uid] = (admission, start())
        except ValueError:
            self._queued_at.pop(uid, None)

    def _all_bound(self, uid: str, admission: str) -> None:
        """Every pod of the admission is bound: observe its latency, once."""
        since = self._queued_at.get(uid)
        if since is not None and since[0] == admission:
            del self._queued_at[uid]
            self.metrics.gang_bound(max(0.0, self.clock() - since[1]))

    def _node_lost(self, key: str, record: Obj) -> tuple[str, str] | None:
        """(reason, message) if a node of the record is deleted or NotReady past the grace
        period; otherwise None, with a recheck timed for the first grace period to end."""
        nodes, grace = self.caches.cache("nodes"), self.options.node_grace
        now = self.clock()
        soonest = math.inf
        for name in sorted(
            {str(p["node"]) for ps in record.get("podSets") or () for p in ps["pods"]}
        ):
            node = nodes.get(name)
            if node is None:
                return "NodeDeleted", f"node {name} was deleted"
            if rc.node_ready(node):
                continue
            since = _not_ready_since(node)
            if since is None:
                since = self._not_ready_since.setdefault(name, now)
            left = since + grace - now
            if left <= 0:
                return "NodeNotReady", f"node {name} has not been Ready for {grace:g} s"
            soonest = min(soonest, left)
        if soonest < math.inf:
            self._recheck(key, soonest)
        return None

    async def _ready_timeout(self, job: Obj, pods: list[Obj]) -> bool:
        """Release and requeue with backoff a gang whose pods are not all Ready within
        `readyTimeoutSeconds` of its admission; True if it did. Both ends are in the job's
        status, so a new leader resumes the timer: the admission time is the Admitted
        condition's lastTransitionTime, and the PodsReady condition, written once every
        pod was Ready, says the timer is over."""
        spec, status = job.get("spec") or {}, job.get("status") or {}
        timeout = spec.get("readyTimeoutSeconds")
        if not timeout or rc.condition_since(job, rc.PODS_READY) is not None:
            return False
        expected = sum(int(ps["replicas"]) for ps in spec.get("podSets") or ())
        if len(pods) == expected and all(map(rc.pod_ready, pods)):
            ready = f"all {expected} pods Ready"
            await self._set_status(
                job, status.get("phase"), [Transition(rc.PODS_READY, True, "AllPodsReady", ready)]
            )
            return False
        now = self.clock()
        admitted = rc.condition_since(job, rc.ADMITTED)
        deadline = (now if admitted is None else admitted) + float(timeout)
        if now < deadline:
            self._recheck(_key(job), deadline - now)
            return False
        count = int((status.get("requeueState") or {}).get("count") or 0) + 1
        delay = rc.requeue_delay(count, *self.options.requeue_backoff)
        message = f"not all {expected} pods Ready within {timeout} s; requeued in {delay:g} s"
        requeue_at = rc.now_time(datetime.fromtimestamp(now + delay, UTC))
        await self._release(
            job,
            "Pending",
            _requeue("ReadyTimeout", message),
            disruption=(rc.READY_TIMEOUT, message),
            requeueState={"count": count, "requeueAt": requeue_at},
        )
        return True

    def _backoff_ends(self, job: Obj) -> None:
        """A job in its requeue backoff (the caches keep it out of the queue until
        `requeueAt`, by the record in its status): reconsider it when the backoff ends."""
        uid = str(_meta(job)["uid"])
        try:
            at = rc.requeue_at(job)
        except ValueError:
            return
        left = None if at is None else at - self.clock()
        if left is None or left <= 0 or uid in self._unparking:
            return
        loop = asyncio.get_running_loop()
        self._unparking[uid] = loop.call_later(left + 0.5, self._unpark, uid)

    def _unpark(self, uid: str) -> None:
        self._unparking.pop(uid, None)
        self.caches.unpark(uid)
        self._changed.set()
        self._dirty_uid(uid)

    def _now(self) -> str:
        """metav1.Time of the controller's clock, for condition transition times."""
        return rc.now_time(datetime.fromtimestamp(self.clock(), UTC))

    async def _each(self, items: Iterable[T], step: Callable[[T], Awaitable[Any]]) -> list[Any]:
        """Run `step` on every item, at most `writes_in_flight` at once; all finish, then
        the first error (if any) is raised."""
        limit = asyncio.Semaphore(self.options.writes_in_flight)

        async def one(item: T) -> Any:
            async with limit:
                return await step(item)

        results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results

    async def _tear_down(
        self, key: str, pods: list[Obj], claims: list[Obj], *, sweep: bool
    ) -> None:
        """Take down what stale admissions of the job `key` left: what still holds a node
        or devices at once (a gang given them may be waiting); with `sweep` (the job has
        no admission now, whose pods and claims would need those names), what holds
        nothing (a finished or unbound pod, a claim neither allocated nor reserved) in
        the background, one deletion at a time (`_sweep`)."""
        if not pods and not claims:
            return
        cached = self.caches.cache("pods")
        namespace = _meta((pods or claims)[0]).get("namespace")

        def pod_of(consumer: Obj) -> Obj | None:
            pod = cached.get(f"{namespace}/{consumer.get('name')}")
            if pod is None or _meta(pod).get("uid") != consumer.get("uid"):
                return None
            return pod

        async def claim_step(claim: Obj) -> None:
            try:
                await release_claim(self.rest, claim, pod_of)
            except KubeError as exc:
                if exc.status not in (404, 409):
                    raise

        if sweep:
            for pod in [p for p in pods if _holds_nothing(PODS, p)]:
                if not _meta(pod).get("deletionTimestamp"):
                    self._sweep(key, PODS, pod, partial(delete_pod, self.rest, pod))
            for claim in [c for c in claims if _holds_nothing(RESOURCE_CLAIMS, c)]:
                self._sweep(key, RESOURCE_CLAIMS, claim, partial(claim_step, claim))
        now = [p for p in pods if not (sweep and _holds_nothing(PODS, p))]
        await self._each(now, lambda p: delete_pod(self.rest, p))
        await self._each(
            [c for c in claims if not (sweep and _holds_nothing(RESOURCE_CLAIMS, c))], claim_step
        )

    def _sweep(
        self, key: str, resource: Resource, obj: Obj, step: Callable[[], Awaitable[None]]
    ) -> None:
        """Run `step`, the deletion of an object that holds nothing, in the background,
        one such step at a time, once per object; a failure reconciles the job again."""
        meta = _meta(obj)
        token = f"{resource.plural}/{meta.get('namespace')}/{meta.get('name')}/{meta.get('uid')}"
        if token in self._sweeping:
            return
        self._sweeping.add(token)

        async def sweep() -> None:
            try:
                async with self._sweep_slots:
                    await step()
            except WRITE_ERRORS as exc:
                log.warning("not deleted", job=key, object=token, error=str(exc))
                self._recheck(key, 1.0)
            finally:
                self._sweeping.discard(token)

        task = asyncio.get_running_loop().create_task(sweep())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish_deletion(self, job: Obj) -> None:
        """A deleted GangJob: once nothing of it is left, drop our finalizer."""
        pods, claims = self.caches.owned(str(_meta(job)["uid"]))
        if pods or claims:
            return
        meta = _meta(job)
        await delete(self.rest, SERVICES.path(meta["namespace"], meta["name"]))
        self._services.discard(str(meta["uid"]))
        finalizers = [f for f in meta.get("finalizers") or () if f != rc.JOB_FINALIZER]
        if len(finalizers) == len(meta.get("finalizers") or ()):
            return
        body = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": finalizers}}
        try:
            await self.rest.request(
                "PATCH",
                GANG_JOBS.path(meta["namespace"], meta["name"]),
                body=body,
                content_type=MERGE_PATCH,
            )
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    async def _create(self, resource: Resource, obj: Obj) -> Obj:
        """Create; if the name is taken, the object that has it (and if that one was
        deleted in between, create again)."""
        meta = _meta(obj)
        for _ in range(2):
            try:
                return await self.rest.request("POST", resource.path(meta["namespace"]), body=obj)
            except KubeError as exc:
                if exc.status != 409:
                    raise
            try:
                return await self.rest.get(resource.path(meta["namespace"], meta["name"]))
            except KubeError as exc:
                if exc.status != 404:
                    raise
        return await self.rest.request("POST", resource.path(meta["namespace"]), body=obj)

    async def _materialise(self, job: Obj, pods: list[Obj]) -> list[Obj] | None:
        """Claims, pods, allocations and bindings of the recorded admission; the pods
        once all are bound, None while waiting (or after a roll-back)."""
        admission = str(job["status"]["admission"]["admissionId"])
        try:
            plans = rc.plan(job, self.caches.cache("resourceclaimtemplates"))
        except rc.CannotMaterialise as exc:
            await self._release(job, "Pending", _requeue("CannotMaterialise", str(exc)))
            return None
        have = {_meta(p)["name"]: p for p in pods}
        if len(have) == len(plans) and all((p.get("spec") or {}).get("nodeName") for p in pods):
            return pods
        claims_cache = self.caches.cache("resourceclaims")
        namespace = _meta(job)["namespace"]

        async def made(resource: Resource, manifest: Obj, cached: Obj | None) -> Obj | None:
            obj = cached if cached is not None else await self._create(resource, manifest)
            return obj if admission_of(obj) == admission else None

        # The Service, claims and pods do not depend on one another: made at once.
        claim_plans = [c for p in plans for c in p.claims]
        creations: list[Callable[[], Awaitable[Obj | None]]] = [
            partial(
                made,
                RESOURCE_CLAIMS,
                c.manifest,
                _current(
                    claims_cache.get(f"{namespace}/{c.manifest['metadata']['name']}"), admission
                ),
            )
            for c in claim_plans
        ]
        creations += [partial(made, PODS, p.manifest, have.get(p.name)) for p in plans]
        if _meta(job)["uid"] not in self._services:
            creations.append(partial(self._service, job))
        created = await self._each(creations, lambda make: make())
        claims, made_pods = created[: len(claim_plans)], created[len(claim_plans) :][: len(plans)]
        if any(o is None for o in (*claims, *made_pods)):
            return None  # a name still held by an earlier admission's object
        if self._still_held(_key(job), str(_meta(job)["uid"])):
            return None
        claim_of = {_meta(c)["name"]: c for c in claims}
        steps = [
            ClaimStep(claim_of[c.manifest["metadata"]["name"]], c.results, pod, p.node)
            for p, pod in zip(plans, made_pods, strict=True)
            for c in p.claims
        ]
        try:
            await self._each(steps, self._protect_and_allocate)  # no write if protected
            await self._each(
                list(zip(plans, made_pods, strict=True)),
                lambda pp: self._bind(pp[1], pp[0].node),
            )
        except CommitBroken as exc:
            await self._release(job, "Pending", _requeue("AdmissionBroken", str(exc)))
            return None
        return None

    async def _bind(self, pod: Obj, node: str) -> None:
        """Bind (commit.bind) the pod as the cache has it now (the reconcile's copy may
        be older than its binding's event), unless this leader bound it there already
        and only that event has not arrived: a reconcile running again meanwhile would
        otherwise bind it a second time and get a 409 for it."""
        uid = str(_meta(pod).get("uid"))
        if self._bound.get(uid) == node:
            return
        cached = self.caches.cache("pods").get(PODS.key(pod))
        if cached is not None and str(_meta(cached).get("uid")) == uid:
            pod = cached
        try:
            await bind(self.rest, pod, node)
        except KubeError as exc:
            if exc.status not in REFUSED:
                raise
            where = f"Pod {_meta(pod).get('namespace')}/{_meta(pod).get('name')}"
            raise CommitBroken(f"{where} cannot be bound: {exc.message}") from exc
        if not (pod.get("spec") or {}).get("nodeName"):
            self._bound[uid] = node

    async def _service(self, job: Obj) -> Obj:
        """The job's headless Service, made once per job by this leader."""
        made = await self._create(SERVICES, rc.service(job))
        self._services.add(str(_meta(job)["uid"]))
        return made

    def _still_held(self, key: str, uid: str) -> bool:
        """Whether the admitted gang must wait for others to let go of its nodes or
        devices before its claims are allocated and its pods bound (drain.py)."""
        caches = self.caches
        why = drain.still_held(caches.state, uid, caches.releasing, caches.releasing_pods)
        if why is None:
            self._draining.pop(key, None)
            return False
        if self._draining.get(key) != why:
            log.info("waiting for others to let go", gang=key, why=why)
        self._draining[key] = why
        return True

    async def _allocate(self, step: ClaimStep) -> None:
        try:
            await allocate_claim(self.rest, step)
        except KubeError as exc:
            if exc.status != 409:
                raise
            meta = _meta(step.claim)
            fresh = await self.rest.get(RESOURCE_CLAIMS.path(meta["namespace"], meta["name"]))
            await allocate_claim(self.rest, ClaimStep(fresh, step.results, step.pod, step.node))

    async def _follow(self, job: Obj, pods: list[Obj]) -> None:
        """Pods bound: Running once all run, released once all succeeded or one failed."""
        status, spec = job.get("status") or {}, job.get("spec") or {}
        phases = [rc.pod_phase(p) for p in pods]
        failed = [_meta(p)["name"] for p, ph in zip(pods, phases, strict=True) if ph == "Failed"]
        if failed:
            restarts = int(status.get("restarts") or 0)
            limit = int((spec.get("failurePolicy") or {}).get("maxRestarts") or 0)
            message = f"pod {failed[0]} failed"
            if restarts < limit:
                message = f"{message}; restart {restarts + 1} of {limit}"
                await self._release(
                    job,
                    "Pending",
                    _requeue("Restarting", message),
                    disruption=(rc.GANG_MEMBER_FAILED, message),
                    restarts=restarts + 1,
                )
            else:
                message = f"{message}; no restarts left"
                await self._release(
                    job,
                    "Failed",
                    [
                        Transition(rc.RUNNING, False, "PodFailed", message),
                        Transition(rc.FAILED, True, "PodFailed", message, True),
                    ],
                    disruption=(rc.GANG_MEMBER_FAILED, message),
                )
            return
        if all(ph == "Succeeded" for ph in phases):
            # The record first, as every release: the cycle it wakes hands the devices out
            # at once (the caches count a succeeded gang's claims as `releasing`), and the
            # gang given them allocates them once the next pass here has deallocated them.
            await self._release(
                job,
                "Succeeded",
                [
                    Transition(rc.RUNNING, False, "Completed", "every pod succeeded"),
                    Transition(rc.SUCCEEDED, True, "Completed", "every pod succeeded"),
                ],
            )
            return
        if status.get("phase") != "Running" and all(
            ph in ("Running", "Succeeded") for ph in phases
        ):
            await self._set_status(
                job,
                "Running",
                [Transition(rc.RUNNING, True, "AllPodsRunning", f"{len(pods)} pods running")],
            )

    # ---- queue status ------------------------------------------------------------------------
    async def _queue_statuses(self) -> None:
        while True:
            await self._queues_changed.wait()
            self._queues_changed.clear()
            if self.is_leader():
                try:
                    await self.write_queue_statuses()
                except WRITE_ERRORS as exc:
                    log.warning("queue status not written", error=str(exc))
                    self._queues_changed.set()
            await asyncio.sleep(self.options.queue_status_gap)

    async def write_queue_statuses(self) -> int:
        """Write the status of every Queue whose status is not what the state says;
        returns how many were written."""
        queues = self.caches.cache("queues")
        written = 0
        for name, wanted in queue_statuses(self.caches.state).items():
            queue = queues.get(name)
            body = None if queue is None else status_patch(queue, wanted)
            if body is None:
                continue
            try:
                done = await self.rest.request(
                    "PATCH",
                    QUEUES.path(name=name, sub="status"),
                    body=body,
                    content_type=MERGE_PATCH,
                )
            except KubeError as exc:
                if exc.status != 404:
                    raise
                continue
            self.caches.assume(QUEUES, done)
            written += 1
        return written

    # ---- status ------------------------------------------------------------------------------
    async def _pending_status(self, job: Obj) -> None:
        status, spec = job.get("status") or {}, job.get("spec") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        uid = str(_meta(job)["uid"])
        problem = self.caches.problems.get(describe("GangJob", job))
        if spec.get("suspend"):
            await self._set_status(
                job,
                "Suspended",
                [Transition(rc.QUEUED, False, "Suspended", "spec.suspend is true")],
            )
        elif problem is not None:
            await self._set_status(
                job, "Pending", [Transition(rc.QUEUED, False, "Invalid", problem, True)]
            )
        elif uid in self.caches.state.pending:
            reason = self.engine.reasons.get(uid)
            if reason is None and uid not in self._cycled:
                # No cycle has looked at it yet: the next one admits it (no Queued write
                # then, nor a conflict with the admission's write) or gives a reason.
                self._unseen.add(uid)
                return
            self._cycled.discard(uid)
            reason = reason or "waiting for the next admission cycle"
            written = await self._set_status(
                job, "Pending", [Transition(rc.QUEUED, True, "Waiting", reason)]
            )
            if written is not None:
                # A gang that waits gets its finalizer now, so its admission, when it
                # comes, makes its pods and claims without one more write before them.
                await self._ensure_finalizer(written)

    async def _set_status(
        self, job: Obj, phase: str | None, transitions: list[Transition], **fields: Any
    ) -> Obj | None:
        """One /status write (if anything changes), with the job's resourceVersion; then
        an Event per condition change. None on a conflict (a newer job is on its way)."""
        status = job.get("status") or {}
        conditions, changed = rc.with_conditions(job, transitions, self._now())
        update = {"phase": phase, "conditions": conditions, **fields}
        if all(status.get(k) == v for k, v in update.items()):
            return job
        meta = _meta(job)
        body = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": update}
        try:
            written = await self.rest.request(
                "PATCH",
                GANG_JOBS.path(meta["namespace"], meta["name"], "status"),
                body=body,
                content_type=MERGE_PATCH,
            )
        except KubeError as exc:
            if exc.status == 409:  # a newer version is on its way; look again if not
                self._recheck(_key(job), 1.0)
            if exc.status in (404, 409):
                return None
            raise
        self.caches.assume(GANG_JOBS, written)
        await self._events(written, changed)
        return written

    async def _release(
        self,
        job: Obj,
        phase: str | None,
        transitions: list[Transition],
        disruption: tuple[str, str] | None = None,
        **fields: Any,
    ) -> bool:
        """The release's commit point: the record cleared (quota returned) with the new
        phase; the admission's pods and claims are stale from then on. A `disruption`
        (reason, message) first marks the admission's pods DisruptionTarget."""
        uid = str(_meta(job)["uid"])
        self._queued_at.pop(uid, None)
        transitions = [*transitions, *_clear(job, (rc.PODS_READY,), "Released", "released")]
        record = (job.get("status") or {}).get("admission")
        if disruption is not None and record:
            pods, _ = self.caches.owned(uid)
            now = self._now()
            marked = await self._each(
                [p for p in pods if admission_of(p) == record["admissionId"]],
                lambda p: disrupt_pod(self.rest, p, *disruption, now),
            )
            for pod in marked:  # seen marked when the release lets them go (caches.py)
                if pod is not None:
                    self.caches.assume(PODS, pod)
        written = await self._set_status(job, phase, transitions, admission=None, **fields)
        if written is not None:
            log.info("released", job=_key(job), phase=phase)
        return written is not None

    async def _events(
        self,
        job: Obj,
        changed: list[Transition],
        regarding: tuple[str, str] | None = None,
    ) -> None:
        """Post an Event per transition in the background: a status write or an
        admission does not wait for its Events (best effort anyway). About a GangJob, or
        an object of `regarding` (apiVersion, kind)."""
        if not changed:
            return
        task = asyncio.get_running_loop().create_task(self._post_events(job, changed, regarding))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _post_events(
        self, job: Obj, changed: list[Transition], regarding: tuple[str, str] | None
    ) -> None:
        for t in changed:
            try:
                async with self._event_slots:
                    await self.rest.request(
                        "POST",
                        EVENTS.path(_meta(job)["namespace"]),
                        body=rc.event(job, t, self.options.instance, regarding=regarding)
                        if regarding is not None
                        else rc.event(job, t, self.options.instance),
                    )
            except WRITE_ERRORS as exc:
                log.warning("event not recorded", job=_key(job), reason=t.reason, error=str(exc))


def _not_ready_since(node: Obj) -> float | None:
    """When a NotReady node's Ready condition last changed (None if not recorded)."""
    for c in (node.get("status") or {}).get("conditions") or ():
        if c.get("type") == "Ready" and c.get("lastTransitionTime"):
            try:
                return rc.seconds(str(c["lastTransitionTime"]))
            except ValueError:
                return None
    return None


def _holds_nothing(resource: Resource, obj: Obj) -> bool:
    """Whether a stale pod or claim holds nothing any more: a pod finished or never bound,
    a claim neither allocated nor reserved. Deleting it makes room for no one."""
    if resource is PODS:
        unbound = not (obj.get("spec") or {}).get("nodeName")
        return unbound or rc.pod_phase(obj) in ("Succeeded", "Failed")
    status = obj.get("status") or {}
    return not status.get("allocation") and not status.get("reservedFor")


def _lets_go(plural: str, kind: str, obj: Obj) -> bool:
    """A pod or claim event that may give back a node's room or a device: a deletion, a
    pod finished, a claim without an allocation."""
    if kind == DELETED:
        return True
    if plural == "pods":
        return rc.pod_phase(obj) in ("Succeeded", "Failed")
    return not (obj.get("status") or {}).get("allocation")


def _current(obj: Obj | None, admission: str) -> Obj | None:
    """A cached object only if it was made for this admission (else create, or find the
    name taken)."""
    return obj if obj is not None and admission_of(obj) == admission else None


def _clear(job: Obj, types: Iterable[str], reason: str, message: str) -> list[Transition]:
    """Conditions of `types` the job has as True, set False (absent ones stay absent)."""
    have = {
        c.get("type")
        for c in (job.get("status") or {}).get("conditions") or ()
        if c.get("status") == "True"
    }
    return [Transition(t, False, reason, message) for t in types if t in have]


def _requeue(reason: str, message: str) -> list[Transition]:
    return [
        Transition(rc.ADMITTED, False, reason, message, True),
        Transition(rc.RUNNING, False, reason, message),
        Transition(rc.QUEUED, True, reason, message),
    ]
