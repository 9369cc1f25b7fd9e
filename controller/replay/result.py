"""A live replay as a simulator `RunResult`, so `simulate`'s table, figures and report
files come out of it unchanged; every figure from what the watcher saw.

How each field is read off the API server (times in scenario seconds):
- a run starts when the last pod of its admission was seen bound (the simulator's
  start: all pods placed) and ends when the GangJob was seen Succeeded;
- a run cut short is an admission released for a lost node (`NodeNotReady`,
  `NodeDeleted`, `Restarting` after a pod failed: a restart) or for preemption
  (`Preempted`); its GPU-seconds from start to release are lost but for what its last
  checkpoint kept, counted as the simulator counts them (`checkpointed`; the simulated
  kubelet resumes the next run from there);
- GPUs held idle are those of pods bound before the last pod of their admission;
- fragmentation: the simulator's, from each admission's pods and devices, from the
  record's appearance to its release;
- the backlog peak is the largest pending count an in-process controller's cycle
  started with (else: jobs seen and not admitted, at their peak);
- events are the watch events the replay saw.
"""

from __future__ import annotations

from controller.replay.record import Admission, JobSeen
from controller.replay.runner import LiveRun
from simulations.run import JobRecord, RunResult, checkpointed

LIVE = "phalanx-live"
"""The scheduler name of a live run in tables and reports (the simulated one: phalanx)."""
RESTART_REASONS = frozenset({"NodeNotReady", "NodeDeleted", "Restarting", "AdmissionLost"})
PREEMPTION_REASONS = frozenset({"Preempted"})


def run_start(a: Admission) -> float:
    """When the admission's run started: all pods bound (or, if that was never seen, the
    record's appearance)."""
    return a.all_bound if a.all_bound is not None else a.seen


def live_result(run: LiveRun) -> RunResult:
    plan, watcher = run.plan, run.watcher
    jobs = [_record(run, j.spec.name, j.gpus, j.runtime_estimate) for j in plan.jobs]
    violations = [
        *watcher.violations,
        *watcher.final_violations(),
        *(f"still held once every job was done: {h}" for h in run.held_at_end),
    ]
    admissions = [a for seen in watcher.jobs.values() for a in seen.admissions]
    return RunResult(
        scenario=plan.scenario.name,
        scheduler=LIVE,
        jobs=jobs,
        total_gpus=plan.total_gpus,
        end_time=run.end,
        events=watcher.events,
        idle_held_gpu_seconds=sum(_held_idle(run, a) for a in admissions),
        violations=violations,
        node_failures=run.node_failures,
        cycles=len(run.cycles),
        fragmentation=fragmentation(run, admissions),
        peak_backlog=_peak_backlog(run),
    )


def _record(run: LiveRun, name: str, gpus: int, estimate: float | None) -> JobRecord:
    plan = run.plan
    spec = next(j.spec for j in plan.jobs if j.spec.name == name)
    seen: JobSeen = run.watcher.jobs[name]
    job = JobRecord(
        name,
        spec.queue,
        spec.pods,
        gpus,
        spec.duration,
        spec.submit,
        remaining=spec.duration,
        runtime_estimate=estimate,
        never_fit=plan.never_fit.get(name),
    )
    every = spec.checkpoint_interval
    every = plan.scenario.checkpoint_interval if every is None else every
    for a in seen.admissions:
        cut = a.released is not None and a.reason not in ("Completed", "Failed")
        if cut:
            assert a.released is not None
            begin = run_start(a)
            job.interrupted.append((begin, a.released))
            ran = max(0.0, a.released - begin)
            kept = checkpointed(ran, every, job.remaining)
            job.remaining -= kept
            job.kept_gpu_seconds += gpus * kept
            job.lost_gpu_seconds += gpus * (ran - kept)
            if a.reason in PREEMPTION_REASONS:
                job.preemptions += 1
            else:
                job.restarts += 1
    job.attempts = (1 if seen.created is not None else 0) + job.restarts + job.preemptions
    last = seen.admissions[-1] if seen.admissions else None
    if last is not None and (last.released is None or last.reason in ("Completed", "Failed")):
        job.start = run_start(last)  # running, or the run that finished
        job.placed = len(last.bound)
        job.first_placed_at = min(last.bound.values(), default=None)
    job.end = seen.succeeded
    return job


def _held_idle(run: LiveRun, a: Admission) -> float:
    """GPU-seconds of pods bound and waiting for the rest of their admission."""
    spec = next(j.spec for j in run.plan.jobs if j.spec.name == a.job)
    until = a.all_bound if a.all_bound is not None else (a.released or run.end)
    return sum(max(0.0, until - t) for t in a.bound.values()) * spec.gpus_per_pod


def fragmentation(run: LiveRun, admissions: list[Admission]) -> float:
    """Time-weighted mean share of free GPUs not on a wholly free node, over the run."""
    if run.end <= 0 or not run.plan.total_gpus:
        return 0.0
    per_node = {n.name: n.gpus for n in run.plan.nodes}
    per_pod = {j.spec.name: j.spec.gpus_per_pod for j in run.plan.jobs}
    changes: list[tuple[float, str, int]] = []
    for a in admissions:
        gpus = per_pod[a.job]
        if not gpus:
            continue
        start, stop = max(0.0, a.seen), min(run.end, a.released or run.end)
        for node in a.pods.values():
            changes += [(start, node, gpus), (stop, node, -gpus)]
    changes.sort(key=lambda c: (c[0], c[2]))
    used = dict.fromkeys(per_node, 0)
    area, value, since = 0.0, 0.0, 0.0
    for at, node, delta in changes:
        area += value * (at - since)
        since = at
        used[node] = used.get(node, 0) + delta
        free = sum(per_node[n] - used.get(n, 0) for n in per_node)
        whole = sum(per_node[n] for n in per_node if not used.get(n, 0))
        value = 1 - whole / free if free else 0.0
    area += value * (run.end - since)
    return area / run.end


def _peak_backlog(run: LiveRun) -> int:
    if run.cycles:
        return max(c.pending for c in run.cycles)
    steps: list[tuple[float, int]] = []
    for seen in run.watcher.jobs.values():
        waiting: float | None = seen.created
        for a in seen.admissions:
            if waiting is not None:
                steps += [(waiting, 1), (a.seen, -1)]
            requeued = a.released is not None and a.reason not in ("Completed", "Failed")
            waiting = a.released if requeued else None
        if waiting is not None:
            steps.append((waiting, 1))
    level = peak = 0
    for _, delta in sorted(steps):
        level += delta
        peak = max(peak, level)
    return peak
