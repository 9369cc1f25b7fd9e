"""One simulation run: a scenario under one scheduler, on the real engine, in virtual time.

All three schedulers drive the same `controller.engine`; none re-implements placement.
- `phalanx`: each job is one gang, admitted all-or-nothing.
- `per-pod`: each pod is admitted on its own, as pods are created, wherever it fits (a
  scheduler without coscheduling). A job starts once all its pods are placed; placed
  pods hold their GPUs meanwhile, which is how two big jobs deadlock.
- `gang-timeout`: per-pod, but a job not fully placed `readyTimeout` seconds after its
  first pod was placed releases everything and retries after an exponential backoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.engine.cycle import Engine
from controller.engine.model import (
    ClaimSpec,
    Device,
    DeviceClass,
    DeviceRequest,
    Gang,
    Node,
    PodClaim,
    PodSet,
    Queue,
    QuotaLimit,
    ResourceSlice,
)
from controller.engine.quantity import to_canonical
from simulations.kernel import Kernel
from simulations.scenario import JobSpec, Scenario

DRIVER = "gpu.sim.phalanx.dev"
GPU_CLASS = "gpu"


@dataclass
class JobRecord:
    """What happened to one job; times are virtual seconds, None if it never happened."""

    name: str
    queue: str
    pods: int
    gpus: int
    duration: float
    submit: float
    start: float | None = None
    end: float | None = None
    placed: int = 0
    attempts: int = 0
    wasted_gpu_seconds: float = 0.0
    first_placed_at: float | None = None


@dataclass
class RunResult:
    scenario: str
    scheduler: str
    jobs: list[JobRecord]
    total_gpus: int
    end_time: float
    events: int
    deadlock_at: float | None = None
    idle_held_gpu_seconds: float = 0.0
    violations: list[str] = field(default_factory=list)


def build_state_objects(scenario: Scenario) -> tuple[list[Node], list[ResourceSlice], int]:
    nodes, slices, gpus = [], [], 0
    for group in scenario.cluster:
        where = f"cluster[{group.name}]"
        alloc = {
            "cpu": to_canonical("cpu", group.cpu, where=f"{where}.cpu"),
            "memory": to_canonical("memory", group.memory, where=f"{where}.memory"),
            "pods": group.pods,
        }
        for i in range(group.count):
            name = f"{group.name}-{i}"
            nodes.append(Node(name, alloc, labels=dict(group.labels)))
            if group.gpus:
                devices = tuple(
                    Device(
                        DRIVER,
                        name,
                        f"gpu-{g}",
                        name,
                        attributes={f"{DRIVER}/index": g},
                        capacity={f"{DRIVER}/memory": str(group.gpu_memory)},
                    )
                    for g in range(group.gpus)
                )
                slices.append(ResourceSlice(name, DRIVER, name, name, devices))
                gpus += group.gpus
    return nodes, slices, gpus


def build_queues(scenario: Scenario) -> list[Queue]:
    out = []
    for q in scenario.queues:
        quota = {}
        for resource, spec in q.quota.items():
            where = f"queues[{q.name}].quota[{resource}]"
            limits = [
                None if v is None else to_canonical(resource, v, where=f"{where}.{key}")
                for key, v in (
                    ("nominal", spec.nominal),
                    ("borrowingLimit", spec.borrowing_limit),
                    ("lendingLimit", spec.lending_limit),
                )
            ]
            quota[resource] = QuotaLimit(limits[0] or 0, limits[1], limits[2])
        out.append(Queue(q.name, q.parent, quota, q.weight))
    return out


class Simulation:
    """Drives one scheduler over one scenario; `run()` returns a RunResult."""

    def __init__(self, scenario: Scenario, scheduler: str, check: bool = False) -> None:
        self.scenario = scenario
        self.scheduler = scheduler
        self.check = check
        self.engine = Engine()
        state = self.engine.state
        state.upsert_device_class(DeviceClass(GPU_CLASS, (f'device.driver == "{DRIVER}"',)))
        nodes, slices, self.total_gpus = build_state_objects(scenario)
        for n in nodes:
            state.upsert_node(n)
        for s in slices:
            state.upsert_slice(s)
        for q in build_queues(scenario):
            state.upsert_queue(q)
        self.kernel = Kernel()
        for kind, handler in (
            ("submit", self._submit),
            ("create-pod", self._create_pod),
            ("cycle", self._cycle),
            ("end", self._end),
            ("timeout", self._timeout),
            ("retry", self._retry),
        ):
            self.kernel.on(kind, handler)
        self.specs = {j.name: j for j in scenario.workload.jobs}
        self.jobs = {
            j.name: JobRecord(
                j.name, j.queue, j.pods, j.pods * j.gpus_per_pod, j.duration, j.submit
            )
            for j in scenario.workload.jobs
        }
        self._cycle_due = False
        self._running = 0
        self._idle_gpus = 0
        self._idle_since = 0.0
        self.idle_gpu_seconds = 0.0
        self.deadlock_at: float | None = None
        self.violations: list[str] = []
        if check:
            self.kernel.after_event = self._check

    # ---- building gangs ----------------------------------------------------------------
    def _gang(self, job: JobSpec, uid: str, pods: int, created: float) -> Gang:
        where = f"workload.jobs[{job.name}].cpuPerPod"
        requests = {"cpu": to_canonical("cpu", job.cpu_per_pod, where=where)}
        claims: tuple[PodClaim, ...] = ()
        if job.gpus_per_pod:
            request = DeviceRequest.exactly("gpus", GPU_CLASS, job.gpus_per_pod)
            claims = (PodClaim("gpus", ClaimSpec((request,))),)
        return Gang(
            uid=uid,
            name=uid,
            namespace="default",
            queue=job.queue,
            priority=job.priority,
            created=created,
            pod_sets=(PodSet("worker", pods, requests, claims=claims),),
        )

    # ---- events ------------------------------------------------------------------------
    def run(self) -> RunResult:
        for job in sorted(self.specs.values(), key=lambda j: (j.submit, j.name)):
            self.kernel.schedule(job.submit, "submit", job.name)
        self.kernel.run(self.scenario.horizon)
        self._account_idle(self.kernel.now)
        return RunResult(
            self.scenario.name,
            self.scheduler,
            list(self.jobs.values()),
            self.total_gpus,
            self.kernel.now,
            self.kernel.processed,
            self.deadlock_at,
            self.idle_gpu_seconds,
            self.violations,
        )

    def _want_cycle(self) -> None:
        if not self._cycle_due:
            self._cycle_due = True
            self.kernel.schedule(self.kernel.now, "cycle")

    def _submit(self, now: float, name: str) -> None:
        job = self.specs[name]
        self.jobs[name].attempts += 1
        if self.scheduler == "phalanx":
            self.engine.state.add_gang(self._gang(job, name, job.pods, now))
            self._want_cycle()
            return
        attempt = self.jobs[name].attempts
        for i in range(job.pods):
            self.kernel.schedule(
                now + i * self.scenario.pod_creation_interval, "create-pod", (name, i, attempt)
            )

    def _create_pod(self, now: float, pod: tuple[str, int, int]) -> None:
        name, index, attempt = pod
        if self.jobs[name].attempts != attempt:
            return
        self.engine.state.add_gang(self._gang(self.specs[name], f"{name}/{index}", 1, now))
        self._want_cycle()

    def _cycle(self, now: float, _: object) -> None:
        self._cycle_due = False
        result = self.engine.cycle()
        result.ledger.commit_all()
        for d in result.admitted:
            if self.scheduler == "phalanx":
                self._start(now, d.gang_uid)
            else:
                self._pod_placed(now, d.gang_uid.rsplit("/", 1)[0])
        self._detect_deadlock(now)

    def _pod_placed(self, now: float, name: str) -> None:
        job = self.jobs[name]
        job.placed += 1
        spec = self.specs[name]
        self._account_idle(now)
        if job.placed == 1:
            job.first_placed_at = now
            if self.scheduler == "gang-timeout":
                self.kernel.schedule(
                    now + self.scenario.ready_timeout, "timeout", (name, job.attempts)
                )
        if job.placed == job.pods:
            self._idle_gpus -= (job.pods - 1) * spec.gpus_per_pod
            self._start(now, name)
        else:
            self._idle_gpus += spec.gpus_per_pod

    def _start(self, now: float, name: str) -> None:
        job = self.jobs[name]
        job.start = now
        job.placed = job.pods
        self._running += 1
        self.kernel.schedule(now + job.duration, "end", name)

    def _end(self, now: float, name: str) -> None:
        job = self.jobs[name]
        job.end = now
        self._running -= 1
        self._release(name)
        self._want_cycle()

    def _release(self, name: str) -> None:
        state = self.engine.state
        uids = (
            [name]
            if self.scheduler == "phalanx"
            else [f"{name}/{i}" for i in range(self.jobs[name].pods)]
        )
        for uid in uids:
            if uid in state.admitted:
                state.release(uid)
            state.remove_gang(uid)

    def _timeout(self, now: float, key: tuple[str, int]) -> None:
        name, attempt = key
        job = self.jobs[name]
        if job.start is not None or job.attempts != attempt:
            return
        spec = self.specs[name]
        self._account_idle(now)
        held = job.placed * spec.gpus_per_pod
        self._idle_gpus -= held
        assert job.first_placed_at is not None
        job.wasted_gpu_seconds += held * (now - job.first_placed_at)
        self._release(name)
        job.placed = 0
        job.first_placed_at = None
        backoff = min(self.scenario.backoff_max, self.scenario.backoff_base * 2 ** (attempt - 1))
        self.kernel.schedule(now + backoff, "retry", name)
        self._want_cycle()

    def _retry(self, now: float, name: str) -> None:
        self._submit(now, name)

    # ---- observation -------------------------------------------------------------------
    def _account_idle(self, now: float) -> None:
        self.idle_gpu_seconds += self._idle_gpus * (now - self._idle_since)
        self._idle_since = now

    def _detect_deadlock(self, now: float) -> None:
        """Partial jobs hold resources, nothing runs, and no future event can free any."""
        if self.deadlock_at is not None or self._running or self.kernel.pending():
            return
        if any(j.start is None and j.placed for j in self.jobs.values()):
            self.deadlock_at = now

    def _check(self, kind: str) -> None:
        problems = self.engine.state.violations()
        if problems:
            self.violations.extend(f"t={self.kernel.now} after {kind}: {p}" for p in problems)
