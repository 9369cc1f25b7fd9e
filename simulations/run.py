"""One simulation run: a scenario under one scheduler, on the real engine, in virtual time.

All three schedulers drive the same `controller.engine`; none re-implements placement.
- `phalanx`: each job is one gang, admitted all-or-nothing.
- `per-pod`: each pod is admitted on its own, as pods are created, wherever it fits (a
  scheduler without coscheduling). A job starts once all its pods are placed; placed
  pods hold their GPUs meanwhile, which is how two big jobs deadlock.
- `gang-timeout`: per-pod, but a job not fully placed `readyTimeout` seconds after its
  first pod was placed releases everything and retries after an exponential backoff.

Admission cycles are coalesced: whatever happens at one virtual instant (and, with
`cycleInterval`, within one interval) is decided by a single `engine.cycle()`.

The scenario's policies (ordering, preemption, placement; per queue too) are built by
name through the policy registry. Preemption applies to `phalanx` only: the baselines
place single pods, and evicting single pods is what leaves partial gangs behind.

A job the engine says can never fit (more GPUs than the cluster or its queue may ever
have, a pod larger than every node) is known before the run starts (`never_fit`): it is
still submitted, but gang-timeout does not retry it, random failures stop once only such
jobs are left, and its record says why. So every run ends: nothing is left that any
future event could admit.

A node failure removes the node and its ResourceSlice from the engine's state; every job
with a pod there is killed (`restarts` grows) and resubmitted; the node and its slice
come back after the repair time (`Simulation.outages` lists every failure that took
effect, random ones as drawn). A preempted job goes back to pending (`preemptions`
grows). Either way a job keeps the progress of its last checkpoint and loses the rest
(`checkpointed`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.engine.cycle import Engine
from controller.engine.model import (
    ClaimSpec,
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
from controller.engine.policy import NoPreemption
from controller.engine.quantity import to_canonical
from policies.routing import build as build_policies
from simulations.kernel import Kernel
from simulations.scenario import FailureSpec, JobSpec, Scenario
from simulations.workload import jobs_of

DRIVER = "gpu.sim.phalanx.dev"
GPU_CLASS = "gpu"
FIRST_FAULTS = 5
"""Plug-in faults a run keeps word for word (`RunResult.first_faults`); the rest are counted."""


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
    restarts: int = 0
    """Times a node failure killed the job (running or partly placed) and resubmitted it."""
    lost_gpu_seconds: float = 0.0
    """GPU-seconds of work thrown away by kills and preemptions (since the last checkpoint)."""
    preemptions: int = 0
    kept_gpu_seconds: float = 0.0
    """GPU-seconds of interrupted runs saved by checkpoints (progress the job kept)."""
    remaining: float = 0.0
    """Run time still needed: duration less checkpointed progress."""
    runtime_estimate: float | None = None
    interrupted: list[tuple[float, float]] = field(default_factory=list)
    """(start, stop) of runs cut short by preemption or a node failure."""
    never_fit: str | None = None
    """Why the job can never fit on the scenario's cluster and quotas (None: it can)."""


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
    node_failures: int = 0
    cycles: int = 0
    fragmentation: float = 0.0
    """Time-weighted mean share of free GPUs stranded on partly used nodes."""
    peak_backlog: int = 0
    """Most gangs pending at the start of a cycle."""
    policy_faults: int = 0
    """Plug-in faults the engine reported (`CycleResult.faults`): a policy under test that
    raised or answered nonsense; the gangs it was deciding stayed pending."""
    first_faults: list[str] = field(default_factory=list)
    """The first few of them, distinct, with the time of the cycle."""


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
                slices.append(
                    ResourceSlice.node_local(
                        name,
                        DRIVER,
                        name,
                        group.gpus,
                        {},
                        {f"{DRIVER}/memory": str(group.gpu_memory)},
                    )
                )
                gpus += group.gpus
    return nodes, slices, gpus


def never_fit_warnings(never: dict[str, str], shown: int = 5) -> list[str]:
    """One line per job that can never fit (the first `shown` of them, then a count), from
    a simulation's `never_fit`: what the CLI prints before running."""
    lines = [f"warning: job {name} {reason}" for name, reason in list(never.items())[:shown]]
    if len(never) > shown:
        lines.append(f"warning: and {len(never) - shown} more jobs that can never fit")
    return lines


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


CHECKPOINT_SLACK = 1e-6
"""A run this close to its next checkpoint (in intervals) has taken it: a sped-up live
replay measures the same run with float clocks, and must keep the same checkpoints."""


def checkpointed(ran: float, every: float | None, remaining: float) -> float:
    """Seconds of progress a run of `ran` seconds keeps when it is cut short: its last
    checkpoint (one every `every` seconds, none if None), at most what it had left."""
    if not every:
        return 0.0
    return min(remaining, math.floor(ran / every + CHECKPOINT_SLACK) * every)


class Simulation:
    """Drives one scheduler over one scenario; `run()` returns a RunResult."""

    def __init__(self, scenario: Scenario, scheduler: str, check: bool = False) -> None:
        self.scenario = scenario
        self.scheduler = scheduler
        self.per_pod = scheduler != "phalanx"
        self.check = check
        self.rng = random.Random(scenario.seed)
        chosen = build_policies(
            scenario.policies.selection(),
            {q.name: q.policies.selection() for q in scenario.queues if q.policies is not None},
        )
        self.engine = Engine(
            ordering=chosen.ordering,
            preemption=NoPreemption() if self.per_pod else chosen.preemption,
            placement=chosen.placement,
        )
        state = self.engine.state
        state.upsert_device_class(DeviceClass(GPU_CLASS, (f'device.driver == "{DRIVER}"',)))
        nodes, slices, self.total_gpus = build_state_objects(scenario)
        self._gpu_groups: dict[int, frozenset[str]] = {}
        for s in slices:
            size = len(s.devices)
            self._gpu_groups[size] = self._gpu_groups.get(size, frozenset()) | {s.node or ""}
        self._frag_area = 0.0
        self._progress: Callable[[int, int], None] | None = None
        self._progress_step = 1
        self._frag_value = 0.0
        self._frag_since = 0.0
        for n in nodes:
            state.upsert_node(n)
        for s in slices:
            state.upsert_slice(s)
        self.nodes = {n.name: n for n in nodes}
        self.slices = {s.name: s for s in slices}
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
            ("node-down", self._node_down),
            ("node-up", self._node_up),
            ("wake", lambda now, _: self._want_cycle()),
        ):
            self.kernel.on(kind, handler)
        specs = jobs_of(scenario, self.rng)
        self.specs = {j.name: j for j in specs}
        self.jobs = {
            j.name: JobRecord(
                j.name,
                j.queue,
                j.pods,
                j.pods * j.gpus_per_pod,
                j.duration,
                j.submit,
                remaining=j.duration,
            )
            for j in specs
        }
        self._estimate(specs)
        self._shapes: dict[tuple[int, int, str], tuple[PodSet, ...]] = {}
        self.never_fit = self._never_fit(specs)
        self._arrivals = sorted(specs, key=lambda j: (j.submit, j.name))
        self._cycle_due = False
        self._last_cycle = -float("inf")
        self.cycles = 0
        self.peak_backlog = 0
        self._running = 0
        self._partial = 0
        self._finished = 0
        self._last_end = 0.0
        self._idle_gpus = 0
        self._idle_since = 0.0
        self.idle_gpu_seconds = 0.0
        self.deadlock_at: float | None = None
        self.violations: list[str] = []
        self.policy_faults = 0
        self.first_faults: list[str] = []
        self._down: dict[str, int] = {}
        self.node_failures = 0
        self.outages: list[tuple[str, float, float]] = []
        """(node, down at, back at) of every failure that took effect, in order (one may
        overlap another of the same node, which then stays down until both are over)."""
        if check:
            self.kernel.after_event = self._check

    # ---- building gangs ----------------------------------------------------------------
    def _estimate(self, specs: list[JobSpec]) -> None:
        """Runtime estimates from an RNG of their own (the workload stays the same)."""
        est = self.scenario.estimates
        rng = random.Random(f"{self.scenario.seed}:estimates")
        for j in specs:
            noise = math.exp(rng.gauss(0.0, est.error)) if est.error else 1.0
            if j.runtime_estimate is not None:
                self.jobs[j.name].runtime_estimate = j.runtime_estimate
            elif est.known:
                self.jobs[j.name].runtime_estimate = j.duration * noise

    def _gang(self, job: JobSpec, uid: str, pods: int, created: float) -> Gang:
        sc = self.scenario
        return Gang(
            uid=uid,
            name=uid,
            namespace="default",
            queue=job.queue,
            priority=job.priority,
            created=created,
            pod_sets=self._pod_sets(job, pods),
            runtime_estimate=self.jobs[job.name].runtime_estimate,
            min_runtime=job.min_runtime if job.min_runtime is not None else sc.min_runtime,
            checkpoint_interval=self._checkpoint_interval(job.name),
        )

    def _never_fit(self, specs: list[JobSpec]) -> dict[str, str]:
        """Each job that can never fit as a whole gang (whatever the scheduler), and why;
        asked of the engine on the full cluster, once per job shape and queue."""
        state = self.engine.state
        seen: dict[tuple[int, int, str, str], str | None] = {}
        out = {}
        for j in specs:
            key = (j.pods, j.gpus_per_pod, str(j.cpu_per_pod), j.queue)
            if key not in seen:
                seen[key] = self.engine.never_fit.reason(state, self._gang(j, j.name, j.pods, 0))
            reason = seen[key]
            if reason is not None:
                out[j.name] = self.jobs[j.name].never_fit = reason
        return out

    def _checkpoint_interval(self, name: str) -> float | None:
        own = self.specs[name].checkpoint_interval
        return own if own is not None else self.scenario.checkpoint_interval

    def _pod_sets(self, job: JobSpec, pods: int) -> tuple[PodSet, ...]:
        """Pod sets are immutable: gangs of one shape share them (and their requests)."""
        key = (pods, job.gpus_per_pod, str(job.cpu_per_pod))
        hit = self._shapes.get(key)
        if hit is None:
            where = f"workload.jobs[{job.name}].cpuPerPod"
            requests = {"cpu": to_canonical("cpu", job.cpu_per_pod, where=where)}
            claims: tuple[PodClaim, ...] = ()
            if job.gpus_per_pod:
                request = DeviceRequest.exactly("gpus", GPU_CLASS, job.gpus_per_pod)
                claims = (PodClaim("gpus", ClaimSpec((request,))),)
            hit = self._shapes[key] = (PodSet("worker", pods, requests, claims=claims),)
        return hit

    # ---- events ------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None) -> RunResult:
        """Run to the horizon (or until nothing is left); `progress(finished, jobs)` is
        called as jobs finish, about every 1% of them."""
        self._progress = progress
        self._progress_step = max(1, len(self.jobs) // 100)
        if self._arrivals:
            self.kernel.schedule(self._arrivals[0].submit, "submit", 0)
        self._plan_failures()
        self.kernel.run(self.scenario.horizon)
        self._account_idle(self.kernel.now)
        self._sample_fragmentation(self.kernel.now)
        end = self.kernel.now
        if self.scenario.horizon is None and self._finished == len(self.jobs):
            end = self._last_end
        return RunResult(
            self.scenario.name,
            self.scheduler,
            list(self.jobs.values()),
            self.total_gpus,
            end,
            self.kernel.processed,
            self.deadlock_at,
            self.idle_gpu_seconds,
            self.violations,
            self.node_failures,
            self.cycles,
            self._frag_area / self.kernel.now if self.kernel.now else 0.0,
            self.peak_backlog,
            self.policy_faults,
            self.first_faults,
        )

    def _want_cycle(self) -> None:
        """One cycle per instant, and at most one per `cycleInterval`."""
        if not self._cycle_due:
            self._cycle_due = True
            at = max(self.kernel.now, self._last_cycle + self.scenario.cycle_interval)
            self.kernel.schedule(at, "cycle")

    def _submit(self, now: float, index: int) -> None:
        """Every job arriving at `now`, then the next arrival (one event per instant)."""
        arrivals = self._arrivals
        while index < len(arrivals) and arrivals[index].submit == now:
            self._enqueue(now, arrivals[index].name)
            index += 1
        if index < len(arrivals):
            self.kernel.schedule(arrivals[index].submit, "submit", index)

    def _enqueue(self, now: float, name: str) -> None:
        job = self.specs[name]
        self.jobs[name].attempts += 1
        if not self.per_pod:
            self.engine.state.add_gang(self._gang(job, name, job.pods, job.submit))
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
        self._last_cycle = now
        self.cycles += 1
        self.peak_backlog = max(self.peak_backlog, len(self.engine.state.pending))
        result = self.engine.cycle(now)
        result.ledger.commit_all()
        self._note_faults(now, result.faults)
        if result.wake_at is not None and result.wake_at > now:
            self.kernel.schedule(result.wake_at, "wake")
        for victim in result.ledger.unrestorable:
            self._preempted(now, victim)  # evicted, then could not be put back: pending
        for d in result.admitted:
            for victim in d.victims:
                self._preempted(now, victim)
            if self.per_pod:
                self._pod_placed(now, d.gang_uid.rsplit("/", 1)[0])
            else:
                self._start(now, d.gang_uid)
        self._detect_deadlock(now)
        self._sample_fragmentation(now)

    def _note_faults(self, now: float, faults: list[str]) -> None:
        self.policy_faults += len(faults)
        for fault in faults:
            if len(self.first_faults) >= FIRST_FAULTS:
                return
            line = f"t={now:g}: {fault}"
            if line not in self.first_faults:
                self.first_faults.append(line)

    def _sample_fragmentation(self, now: float) -> None:
        """Free GPUs not on a wholly free node, as a share of all free GPUs (0 when none is
        free); sampled after every cycle and held until the next, read off the engine's
        free-device buckets so a sample costs a few lookups."""
        self._frag_area += self._frag_value * (now - self._frag_since)
        self._frag_since = now
        ms = self.engine.state.inventory.match_set((GPU_CLASS, ()))
        free = ms.total_free()
        whole = 0
        for size, members in self._gpu_groups.items():
            bucket = ms.buckets.get(size)
            if bucket:
                uniform = len(self._gpu_groups) == 1
                whole += size * (len(bucket) if uniform else len(members.intersection(bucket)))
        self._frag_value = 1 - whole / free if free else 0.0

    def _pod_placed(self, now: float, name: str) -> None:
        job = self.jobs[name]
        spec = self.specs[name]
        self._account_idle(now)
        job.placed += 1
        if job.placed == 1:
            job.first_placed_at = now
            if self.scheduler == "gang-timeout":
                self.kernel.schedule(
                    now + self.scenario.ready_timeout, "timeout", (name, job.attempts)
                )
        if job.placed == job.pods:
            if job.pods > 1:
                self._partial -= 1
            self._idle_gpus -= (job.pods - 1) * spec.gpus_per_pod
            self._start(now, name)
        else:
            if job.placed == 1:
                self._partial += 1
            self._idle_gpus += spec.gpus_per_pod

    def _start(self, now: float, name: str) -> None:
        job = self.jobs[name]
        job.start = now
        job.placed = job.pods
        self._running += 1
        self.kernel.schedule(now + job.remaining, "end", (name, job.attempts))

    def _interrupt(self, now: float, name: str) -> None:
        """Stop a running job: progress up to its last checkpoint is kept, the rest lost."""
        job = self.jobs[name]
        assert job.start is not None and job.end is None
        ran = now - job.start
        kept = checkpointed(ran, self._checkpoint_interval(name), job.remaining)
        job.remaining -= kept
        job.kept_gpu_seconds += job.gpus * kept
        job.lost_gpu_seconds += job.gpus * (ran - kept)
        job.interrupted.append((job.start, now))
        job.start = None
        self._running -= 1

    def _preempted(self, now: float, name: str) -> None:
        """The engine evicted the job (and put its gang back in pending)."""
        self._interrupt(now, name)
        job = self.jobs[name]
        job.preemptions += 1
        job.attempts += 1
        job.placed = 0

    def _end(self, now: float, key: tuple[str, int]) -> None:
        name, attempt = key
        job = self.jobs[name]
        if job.attempts != attempt:
            return
        job.end = now
        self._running -= 1
        self._finished += 1
        if self._progress is not None and self._finished % self._progress_step == 0:
            self._progress(self._finished, len(self.jobs))
        self._last_end = now
        self._release(name)
        self._want_cycle()

    def _release(self, name: str) -> None:
        state = self.engine.state
        uids = [f"{name}/{i}" for i in range(self.jobs[name].pods)] if self.per_pod else [name]
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
        self._partial -= 1
        assert job.first_placed_at is not None
        job.wasted_gpu_seconds += held * (now - job.first_placed_at)
        self._release(name)
        job.placed = 0
        job.first_placed_at = None
        if name not in self.never_fit:  # retrying a job that can never fit cannot help
            timeouts = attempt - job.restarts
            backoff = min(
                self.scenario.backoff_max, self.scenario.backoff_base * 2 ** (timeouts - 1)
            )
            self.kernel.schedule(now + backoff, "retry", key)
        self._want_cycle()

    def _retry(self, now: float, key: tuple[str, int]) -> None:
        name, attempt = key
        if self.jobs[name].attempts == attempt:
            self._enqueue(now, name)

    # ---- node failures -----------------------------------------------------------------
    def _plan_failures(self) -> None:
        """Fixed failures as given; random ones get each node's first up-time drawn now,
        in cluster order (later ones are drawn as nodes come back)."""
        for i, f in enumerate(self.scenario.failures):
            if f.random:
                for name in self._nodes_of(f):
                    self.kernel.schedule(self._next_failure(f), "node-down", (name, i))
            else:
                assert f.at is not None and f.node is not None
                self.kernel.schedule(f.at, "node-down", (f.node, i))

    def _nodes_of(self, f: FailureSpec) -> list[str]:
        return [
            f"{g.name}-{k}"
            for g in self.scenario.cluster
            if f.group is None or g.name == f.group
            for k in range(g.count)
        ]

    def _next_failure(self, f: FailureSpec) -> float:
        assert f.mtbf_hours is not None
        return self.kernel.now + self.rng.expovariate(1.0 / (f.mtbf_hours * 3600.0))

    def _node_down(self, now: float, key: tuple[str, int]) -> None:
        name, i = key
        f = self.scenario.failures[i]
        if self._finished == len(self.jobs) or (
            f.random and self._finished + len(self.never_fit) == len(self.jobs)
        ):
            return  # nothing is left to run: end the endless chain of random failures
        down_for = f.repair_seconds if f.random else f.down_for
        assert down_for is not None
        self.kernel.schedule(now + down_for, "node-up", key)
        self.outages.append((name, now, now + down_for))
        depth = self._down.get(name, 0)
        self._down[name] = depth + 1
        if depth:
            return
        self.node_failures += 1
        state = self.engine.state
        victims = state.remove_node(name)
        if name in self.slices:
            state.remove_slice(name)
        killed = dict.fromkeys(uid.rsplit("/", 1)[0] if self.per_pod else uid for uid in victims)
        for job in killed:
            self._kill(now, job)

    def _node_up(self, now: float, key: tuple[str, int]) -> None:
        name, i = key
        self._down[name] -= 1
        if not self._down[name]:
            del self._down[name]
            state = self.engine.state
            state.upsert_node(self.nodes[name])
            if name in self.slices:
                state.upsert_slice(self.slices[name])
            self._want_cycle()
        f = self.scenario.failures[i]
        if f.random:
            self.kernel.schedule(self._next_failure(f), "node-down", key)

    def _kill(self, now: float, name: str) -> None:
        """A failure took down a pod of the job: release all of it and resubmit."""
        job = self.jobs[name]
        self._account_idle(now)
        if job.start is not None:
            self._interrupt(now, name)
        elif job.placed:
            self._idle_gpus -= job.placed * self.specs[name].gpus_per_pod
            self._partial -= 1
        job.restarts += 1
        job.placed = 0
        job.first_placed_at = None
        if self.per_pod:
            self._release(name)
            self._enqueue(now, name)
        else:
            # the same gang goes back to pending, keeping its attained service
            self.engine.state.release(name, requeue=True)
            job.attempts += 1
        self._want_cycle()

    # ---- observation -------------------------------------------------------------------
    def _account_idle(self, now: float) -> None:
        self.idle_gpu_seconds += self._idle_gpus * (now - self._idle_since)
        self._idle_since = now

    def _detect_deadlock(self, now: float) -> None:
        """Partial jobs hold resources, nothing runs, and no future event can free any."""
        if self.deadlock_at is not None or self._running or self.kernel.pending():
            return
        if self._partial:
            self.deadlock_at = now

    def _check(self, kind: str) -> None:
        problems = self.engine.state.violations()
        if problems:
            self.violations.extend(f"t={self.kernel.now} after {kind}: {p}" for p in problems)
