"""What a live replay saw on the API server, event by event, with scenario timestamps.

A `Watcher` runs one list+watch cache (the controller's own `Informer`) per resource the
replay judges by: its GangJobs and pods (by the run's label), every ResourceClaim, the
Queues and its nodes. Each event is stamped with the scenario time of its arrival, and
kept only as far as the figures and the invariants need it:

- per node: when it was seen NotReady and Ready again (`outages`);
- per job: when its GangJob was first seen, each admission (the record's id and pods,
  when the record appeared, each pod's binding, the moment the last one was bound, when
  and why the record was cleared), and when it succeeded;
- invariants checked as events arrive, in each resource's own watch order (which is the
  server's order of that resource's writes): no device allocated to two claims, no node
  over its allocatable, quota within every Queue's limits (both in the Queues' status and
  recomputed from the admission records), no pod bound but for a recorded admission that
  puts it on that node; and at the end: no admission partly bound and still held, and
  nothing held once every job is done.

The controller's own decisions (which cycle admitted which gangs, in decision order) come
from `CycleLog`, a metrics recorder put in front of an in-process controller's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.engine.cycle import CycleResult
from controller.engine.errors import InvalidInput
from controller.engine.quantity import to_canonical
from controller.engine.quota import QuotaTree
from controller.engine.state import ClusterState
from controller.kube import resources as r
from controller.kube import translate
from controller.kube.informer import DELETED, Informer
from controller.kube.metrics import Recorder
from controller.kube.reconcile import ADMITTED, GANG_LABEL, node_ready
from controller.kube.rest import Obj, Rest
from controller.kube.translate import ADMISSION_ANNOTATION
from controller.replay.plan import RUN_LABEL, ReplayPlan

DeviceKey = tuple[str, str, str]


class Clock:
    """Scenario seconds on the event loop's clock: `(loop time - t0) * speed`; 0 until
    `start` (what happens before, such as the creation of the jobs due at 0, is at 0)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.t0: float | None = None

    def start(self) -> None:
        """Scenario time 0 is now."""
        self.t0 = asyncio.get_running_loop().time()

    def now(self) -> float:
        if self.t0 is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self.t0) * self.speed

    def loop_time(self, scenario_seconds: float) -> float:
        assert self.t0 is not None, "the clock has not started"
        return self.t0 + scenario_seconds / self.speed


@dataclass
class Admission:
    """One admission of a job, as its GangJob record and pods showed it."""

    job: str
    id: str
    seen: float
    """When the watcher saw the record (the commit point) appear."""
    pods: dict[str, str]
    """Pod name -> node, from the record."""
    queue: str
    charged: dict[str, int]
    bound: dict[str, float] = field(default_factory=dict)
    all_bound: float | None = None
    released: float | None = None
    reason: str = ""
    """Why the record was cleared: Completed, Failed, or the Admitted condition's reason
    (Restarting, NodeNotReady, Preempted, ...)."""
    cycle: int | None = None
    """The in-process controller's cycle that decided it (`Watcher.link_cycles`), if known."""


@dataclass
class JobSeen:
    name: str
    pods: int
    created: float | None = None
    uid: str = ""
    stamp: str = ""
    """metadata.creationTimestamp (one-second resolution)."""
    admissions: list[Admission] = field(default_factory=list)
    succeeded: float | None = None
    failed: float | None = None

    @property
    def current(self) -> Admission | None:
        last = self.admissions[-1] if self.admissions else None
        return last if last is not None and last.released is None else None


@dataclass
class NodeDown:
    """A node seen not Ready from `at` (scenario seconds) until `until` (None: still)."""

    node: str
    at: float
    until: float | None = None


@dataclass(frozen=True)
class CycleSeen:
    number: int
    at: float
    """When it began (scenario seconds): its decisions are made then."""
    admitted: tuple[str, ...]
    """Gang uids in the order the cycle decided them."""
    pending: int


class CycleLog(Recorder):
    """A metrics recorder that also keeps every cycle's admissions (in decision order)."""

    def __init__(self, inner: Recorder, clock: Clock, state: ClusterState) -> None:
        self.inner = inner
        self.clock = clock
        self.state = state
        self.cycles: list[CycleSeen] = []

    def cycle_done(self, result: CycleResult, decided: float, seconds: float) -> None:
        admitted = tuple(d.gang_uid for d in result.admitted)
        pending = len(self.state.pending) + len(admitted)
        began = self.clock.now() - seconds * self.clock.speed
        self.cycles.append(CycleSeen(len(self.cycles), began, admitted, pending))
        self.inner.cycle_done(result, decided, seconds)

    def admission(self, outcome: str) -> None:
        self.inner.admission(outcome)

    def gang_bound(self, latency: float) -> None:
        self.inner.gang_bound(latency)

    def preempted(self, queue: str, gangs: int = 1) -> None:
        self.inner.preempted(queue, gangs)

    def api_error(self, verb: str, code: int) -> None:
        self.inner.api_error(verb, code)

    def leader_changed(self, leading: bool) -> None:
        self.inner.leader_changed(leading)


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _amounts(resources: dict[str, Any] | None) -> dict[str, int]:
    return {k: to_canonical(k, v, where=k) for k, v in (resources or {}).items()}


class Watcher:
    """Caches of the replay's objects, and what their events showed."""

    def __init__(self, rest: Rest, plan: ReplayPlan, clock: Clock) -> None:
        self.plan = plan
        self.clock = clock
        selector = f"{RUN_LABEL}={plan.run}"
        self.informers = {
            "gangjobs": Informer(rest, r.GANG_JOBS, label_selector=selector),
            "pods": Informer(rest, r.PODS, label_selector=selector),
            "resourceclaims": Informer(rest, r.RESOURCE_CLAIMS),
            "queues": Informer(rest, r.QUEUES),
            "nodes": Informer(rest, r.NODES, label_selector=selector),
        }
        handlers: dict[str, Callable[[str, Obj | None, Obj], None]] = {
            "gangjobs": self._on_job,
            "pods": self._on_pod,
            "resourceclaims": self._on_claim,
            "queues": self._on_queue,
            "nodes": self._on_node,
        }
        for plural, handler in handlers.items():
            self.informers[plural].add_handler(self._counted(handler))
        self.jobs = {j.spec.name: JobSeen(j.spec.name, j.spec.pods) for j in plan.jobs}
        self.events = 0
        self.changed = asyncio.Event()
        """Set on every event (the runner waits on it)."""
        self.violations: list[str] = []
        self._bindings: dict[str, tuple[float, str, str, str, str]] = {}
        """Pod uid -> (time, pod, job, admission id, node) of every binding seen."""
        self._bound_by_admission: dict[str, dict[str, float]] = {}
        self._records: dict[str, Admission] = {}
        self._pod_usage: dict[str, tuple[str, dict[str, int]]] = {}
        self._node_used: dict[str, dict[str, int]] = {}
        self._allocatable: dict[str, dict[str, int]] = {}
        self.outages: list[NodeDown] = []
        """Every time a node of the run was seen not Ready, in order."""
        self._down: dict[str, NodeDown] = {}
        self._claim_devices: dict[str, tuple[DeviceKey, ...]] = {}
        self._holder: dict[DeviceKey, str] = {}
        self._queue_specs = {q["metadata"]["name"]: q for q in plan.queues}
        self._limits = {name: translate.queue(q) for name, q in self._queue_specs.items()}
        self.quota = QuotaTree()
        for queue in self._limits.values():
            self.quota.upsert(queue)
        self.queue_status: dict[str, dict[str, dict[str, int]]] = {}
        self.queue_updates = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for informer in self.informers.values():
                tasks.create_task(informer.run())

    async def synced(self) -> None:
        for informer in self.informers.values():
            await informer.synced.wait()

    def _counted(
        self, handler: Callable[[str, Obj | None, Obj], None]
    ) -> Callable[[str, Obj | None, Obj], None]:
        def on_event(kind: str, old: Obj | None, new: Obj) -> None:
            self.events += 1
            handler(kind, old, new)
            self.changed.set()

        return on_event

    def _violation(self, what: str) -> None:
        self.violations.append(f"t={self.clock.now():.1f}s: {what}")

    # ---- GangJobs: admissions, releases, completion -------------------------------------
    def _on_job(self, kind: str, old: Obj | None, new: Obj) -> None:
        meta, status = _meta(new), new.get("status") or {}
        seen = self.jobs.get(str(meta.get("name")))
        if seen is None:
            return
        now = self.clock.now()
        if seen.created is None:
            seen.created, seen.uid = now, str(meta.get("uid"))
            seen.stamp = str(meta.get("creationTimestamp", ""))
        record = None if kind == DELETED else status.get("admission")
        current = seen.current
        if current is not None and (not record or record.get("admissionId") != current.id):
            self._release(current, now, self._reason(status))
        if record and (current is None or record.get("admissionId") != current.id):
            self._admit(seen, record, now)
        phase = status.get("phase")
        if phase == "Succeeded" and seen.succeeded is None:
            seen.succeeded = now
        elif phase == "Failed" and seen.failed is None:
            seen.failed = now

    @staticmethod
    def _reason(status: Obj) -> str:
        phase = status.get("phase")
        if phase == "Succeeded":
            return "Completed"
        if phase == "Failed":
            return "Failed"
        for condition in status.get("conditions") or ():
            if condition.get("type") == ADMITTED:
                return str(condition.get("reason") or "Released")
        return "Released"

    def _admit(self, seen: JobSeen, record: Obj, now: float) -> None:
        pods = {
            f"{seen.name}-{ps['name']}-{p['index']}": str(p["node"])
            for ps in record.get("podSets") or ()
            for p in ps.get("pods") or ()
        }
        queue = str(record.get("queue", ""))
        try:
            charged = _amounts(record.get("quotaCharged"))
        except InvalidInput as exc:
            self._violation(f"GangJob {seen.name}: unreadable quotaCharged: {exc}")
            charged = {}
        admission = Admission(seen.name, str(record["admissionId"]), now, pods, queue, charged)
        seen.admissions.append(admission)
        self._records[admission.id] = admission
        for pod, at in self._bound_by_admission.get(admission.id, {}).items():
            self._bound(admission, pod, at)
        try:
            self.quota.charge(queue, charged)
        except InvalidInput as exc:
            self._violation(f"GangJob {seen.name}: charge to queue {queue}: {exc}")
        for problem in self.quota.violations():
            self._violation(f"quota (from admission records) after {seen.name} admitted: {problem}")

    def _release(self, admission: Admission, now: float, reason: str) -> None:
        admission.released, admission.reason = now, reason
        with contextlib.suppress(InvalidInput):
            self.quota.uncharge(admission.queue, admission.charged)

    # ---- pods: bindings and node usage --------------------------------------------------
    def _on_pod(self, kind: str, old: Obj | None, new: Obj) -> None:
        meta, spec = _meta(new), new.get("spec") or {}
        uid, key = str(meta.get("uid")), r.PODS.key(new)
        node = spec.get("nodeName")
        if node and uid not in self._bindings:
            job = str((meta.get("labels") or {}).get(GANG_LABEL, ""))
            admission = str((meta.get("annotations") or {}).get(ADMISSION_ANNOTATION, ""))
            now = self.clock.now()
            name = str(meta.get("name"))
            self._bindings[uid] = (now, name, job, admission, str(node))
            self._bound_by_admission.setdefault(admission, {})[name] = now
            record = self._records.get(admission)
            if record is not None:
                self._bound(record, name, now)
        self._node_usage(key, None if kind == DELETED else new)

    def _bound(self, admission: Admission, pod: str, at: float) -> None:
        admission.bound[pod] = at
        if admission.all_bound is None and len(admission.bound) == len(admission.pods):
            admission.all_bound = at

    def _node_usage(self, key: str, pod: Obj | None) -> None:
        before = self._pod_usage.pop(key, None)
        if before is not None:
            used = self._node_used[before[0]]
            for res, amount in before[1].items():
                used[res] -= amount
        try:
            usage = None if pod is None else translate.pod_usage(pod)
        except InvalidInput as exc:
            self._violation(f"unreadable pod {key}: {exc}")
            return
        if usage is None:
            return
        node, requests = usage
        self._pod_usage[key] = usage
        used = self._node_used.setdefault(node, {})
        allocatable = self._allocatable.get(node, {})
        for res, amount in requests.items():
            used[res] = used.get(res, 0) + amount
            if used[res] > allocatable.get(res, 0) and node in self._allocatable:
                self._violation(
                    f"node {node}: {res} used {used[res]} > allocatable {allocatable.get(res, 0)}"
                )

    def _on_node(self, kind: str, old: Obj | None, new: Obj) -> None:
        name = str(_meta(new).get("name"))
        if kind == DELETED:
            self._allocatable.pop(name, None)
            return
        down = self._down.get(name)
        if not node_ready(new) and down is None:
            self._down[name] = NodeDown(name, self.clock.now())
            self.outages.append(self._down[name])
        elif node_ready(new) and down is not None:
            down.until = self.clock.now()
            del self._down[name]
        with contextlib.suppress(InvalidInput):
            self._allocatable[name] = dict(translate.node(new).allocatable)

    # ---- claims: devices --------------------------------------------------------------------
    def _on_claim(self, kind: str, old: Obj | None, new: Obj) -> None:
        key = r.RESOURCE_CLAIMS.key(new)
        for device in self._claim_devices.pop(key, ()):
            if self._holder.get(device) == key:
                del self._holder[device]
        if kind == DELETED:
            return
        try:
            devices = translate.claim_devices(new)
        except InvalidInput as exc:
            self._violation(f"unreadable claim {key}: {exc}")
            return
        self._claim_devices[key] = devices
        for device in devices:
            holder = self._holder.setdefault(device, key)
            if holder != key:
                self._violation(f"device {'/'.join(device)} allocated to {holder} and {key}")

    # ---- queues: status within limits -------------------------------------------------------
    def _on_queue(self, kind: str, old: Obj | None, new: Obj) -> None:
        name = str(_meta(new).get("name"))
        limits = self._limits.get(name)
        if limits is None or kind == DELETED:
            return
        status = new.get("status") or {}
        try:
            usage, borrowed = _amounts(status.get("usage")), _amounts(status.get("borrowed"))
        except InvalidInput as exc:
            self._violation(f"Queue {name}: unreadable status: {exc}")
            return
        if self.queue_status.get(name) != {"usage": usage, "borrowed": borrowed}:
            self.queue_updates += 1
        self.queue_status[name] = {"usage": usage, "borrowed": borrowed}
        for res, amount in borrowed.items():
            if not amount:
                continue
            if limits.parent is None:
                self._violation(f"Queue {name} (a root) reports borrowing {amount} {res}")
                continue
            limit = limits.quota.get(res)
            cap = None if limit is None else limit.borrowing_limit
            if cap is not None and amount > cap:
                self._violation(f"Queue {name}: borrowed {amount} {res} > borrowingLimit {cap}")

    # ---- at the end -------------------------------------------------------------------------
    def link_cycles(self, cycles: list[CycleSeen]) -> None:
        """Give each admission the cycle that decided it: the last to admit its gang
        before its record was seen, after the one of the job's previous admission (a
        cycle is logged once its commit points are written, after their records show)."""
        for seen in self.jobs.values():
            mine = [c for c in cycles if seen.uid in c.admitted]
            previous = -1
            for a in seen.admissions:
                before = [c.number for c in mine if previous < c.number and c.at <= a.seen]
                a.cycle = before[-1] if before else None
                previous = previous if a.cycle is None else a.cycle

    def held(self) -> list[str]:
        """What is still held: bound pods, allocated devices, quota in records and Queue
        status (empty once every job is done and released)."""
        out = []
        running = sorted(k for k in self._pod_usage)
        if running:
            out.append(f"{len(running)} pods still bound and running, e.g. {running[0]}")
        if self._holder:
            device, claim = next(iter(self._holder.items()))
            out.append(f"{len(self._holder)} devices still allocated, e.g. {device} to {claim}")
        for name in sorted(self._limits):
            used = {k: v for k, v in self.quota.usage(name).items() if v}
            if used:
                out.append(f"queue {name}: admission records still charge {used}")
            reported = {
                k: v for k, v in self.queue_status.get(name, {}).get("usage", {}).items() if v
            }
            if reported:
                out.append(f"Queue {name}: status still reports usage {reported}")
        return out

    def final_violations(self) -> list[str]:
        """Bindings no recorded admission explains, and admissions left partly bound."""
        out = []
        for at, pod, job, admission, node in sorted(self._bindings.values()):
            record = self._records.get(admission)
            if record is None:
                out.append(f"t={at:.1f}s: pod {pod} of {job} bound without a recorded admission")
            elif record.pods.get(pod) != node:
                out.append(
                    f"t={at:.1f}s: pod {pod} bound to {node}, its admission {admission} "
                    f"says {record.pods.get(pod)}"
                )
        for seen in self.jobs.values():
            for a in seen.admissions:
                if a.released is None and a.bound and a.all_bound is None:
                    out.append(
                        f"admission {a.id} of {a.job}: {len(a.bound)} of {len(a.pods)} pods "
                        "bound and the rest never were (a partial gang)"
                    )
        return out
