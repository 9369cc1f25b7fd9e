"""The parity report: a live replay against the simulator's run of the same scenario.

- Admission order: every admission (a job's second admission after a restart is `job#2`)
  in the order the two schedulers made them. Admissions of one cycle count as
  simultaneous and are listed by name: the simulator's cycles are its distinct admission
  times, an in-process controller's are its own (`CycleLog`); an external controller's
  are guessed (admissions seen within half a cycle interval of each other). The first
  position where the lists differ is named.
- Start times: per job, the start of its last run live minus simulated, in scenario
  seconds, in cycles, and relative to the simulated completion time (submit to end); the
  end times likewise. Both sides mean the moment the job's work begins. Simulated: the
  instant of the cycle that admitted it (all pods placed at once, its run timed from
  then). Live: the moment the watcher received the watch event that showed the last pod
  of the admission bound (`spec.nodeName` set), on the event loop's clock (sub-millisecond)
  times the speed; the simulated kubelet times a pod's run from its own sight of that
  binding, so the two agree within a watch delivery. No Kubernetes timestamp is used
  (creationTimestamp and condition times have one-second resolution: 60 scenario seconds
  at 60x). A live start therefore includes everything the simulator does not model: the
  commit point's write, the pods and claims created, the claims allocated, the bindings
  and one watch delivery. An end is, simulated, start plus duration; live, the GangJob
  seen Succeeded (the pods' Succeeded writes, the controller's watch, its release write).
  Each start is split into its decision error (when the live cycle that admitted it
  began, less the simulated start) and its placement (from that cycle's start to the
  live start). Errors add up along chains of jobs (a job that waits for another's end
  starts as late as that end came, and more), so each start also has its step error: its
  error less the end error of the job whose end it waited for (the simulator started it
  the moment that job ended), the lag its own admission added.
- Every summary figure of `simulate`, simulated and live, with the difference.
- Node failures: each outage the replay applied (the scenario's fixed failures, or the
  random ones as the simulator drew them) against when the watcher saw its node go
  NotReady.
- Causes: for each job whose start is off by a cycle or more, the first explanation that
  fits, from what the watcher saw: its GangJob seen late, its pods bound late, the release
  it waited for seen late, no cycle in between, or else just the difference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from controller.replay.plan import Outage
from controller.replay.record import Admission, JobSeen, NodeDown
from controller.replay.result import run_start
from controller.replay.runner import LiveRun
from simulations.metrics import summarize
from simulations.run import JobRecord, RunResult

NOT_COMPARED = ("scenario", "scheduler", "events")
"""Figures that are not the same quantity live: events are the simulator's heap events
and, live, watch events."""


@dataclass(frozen=True)
class Admitted:
    job: str
    attempt: int
    at: float
    batch: int

    @property
    def label(self) -> str:
        return self.job if self.attempt == 1 else f"{self.job}#{self.attempt}"


@dataclass
class Order:
    simulated: list[Admitted]
    live: list[Admitted]
    first_difference: int | None
    """0-based position of the first difference; None when the orders are the same."""
    message: str

    @property
    def same(self) -> bool:
        return self.first_difference is None


@dataclass
class Timing:
    job: str
    submit: float
    simulated_start: float | None
    live_start: float | None
    start_error: float | None
    """Live minus simulated, scenario seconds."""
    start_error_cycles: float | None
    start_error_relative: float | None
    """The start error over the simulated completion time (submit to end)."""
    simulated_end: float | None
    live_end: float | None
    end_error: float | None
    cause: str = ""
    step_error: float | None = None
    """The start error less the end error of the job the simulator started it for (its
    start is that job's end); the start error if it waited for no job's end."""
    decision_error: float | None = None
    """When the live cycle that made its last admission began, less the simulated start:
    how late (or early) the decision came. None without an in-process controller."""
    placement: float | None = None
    """From that cycle's start to the live start: the commit point written, the pods and
    claims created, the claims allocated, the pods bound and the last binding's watch
    event; the simulator has none of it (its start is its decision)."""


@dataclass
class Parity:
    scenario: str
    speed: float
    cycle_interval: float
    order: Order
    timings: list[Timing]
    figures: list[tuple[str, object, object, object]]
    """(figure, simulated, live, live minus simulated or same/differs)."""
    violations: list[str]
    notes: list[str] = field(default_factory=list)
    failures: str = ""
    """The node failures compared (empty when the scenario has none)."""

    def start_errors(self) -> list[float]:
        return [abs(t.start_error) for t in self.timings if t.start_error is not None]

    def summary(self) -> dict[str, object]:
        errors = self.start_errors()
        worst = max(
            (t for t in self.timings if t.start_error is not None),
            key=lambda t: abs(t.start_error or 0.0),
            default=None,
        )
        cycle = self.cycle_interval or 1.0
        steps = [abs(t.step_error) for t in self.timings if t.step_error is not None]
        decisions = [abs(t.decision_error) for t in self.timings if t.decision_error is not None]
        placements = [t.placement for t in self.timings if t.placement is not None]
        return {
            "admission_order_same": self.order.same,
            "jobs_compared": len(errors),
            "start_error_mean_s": round(sum(errors) / len(errors), 3) if errors else None,
            "start_error_p95_s": round(_p95(errors), 3) if errors else None,
            "start_error_max_s": round(max(errors), 3) if errors else None,
            "start_error_max_cycles": round(max(errors) / cycle, 3) if errors else None,
            "step_error_max_s": round(max(steps), 3) if steps else None,
            "step_error_mean_s": round(sum(steps) / len(steps), 3) if steps else None,
            "decision_error_max_s": round(max(decisions), 3) if decisions else None,
            "placement_max_s": round(max(placements), 3) if placements else None,
            "placement_mean_s": (
                round(sum(placements) / len(placements), 3) if placements else None
            ),
            "worst_job": None if worst is None else worst.job,
            "within_one_cycle": sum(1 for e in errors if e < cycle),
            "invariants_held": not self.violations,
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "speed": self.speed,
            "cycle_interval_s": self.cycle_interval,
            "summary": self.summary(),
            "admission_order": {
                "same": self.order.same,
                "first_difference": self.order.first_difference,
                "message": self.order.message,
                "simulated": [asdict(a) | {"label": a.label} for a in self.order.simulated],
                "live": [asdict(a) | {"label": a.label} for a in self.order.live],
            },
            "jobs": [asdict(t) for t in self.timings],
            "figures": [
                {"figure": k, "simulated": s, "live": v, "difference": d}
                for k, s, v, d in self.figures
            ],
            "violations": self.violations,
            "notes": self.notes,
            "node_failures": self.failures,
        }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


# ---- admission order ----------------------------------------------------------------------
def simulated_order(result: RunResult) -> list[Admitted]:
    """Every run of every job by its start; one batch per distinct start time."""
    runs = []
    for job in result.jobs:
        current = [] if job.start is None else [job.start]
        starts = sorted([s for s, _ in job.interrupted] + current)
        runs += [(at, job.name, k + 1) for k, at in enumerate(starts)]
    times = sorted({at for at, _, _ in runs})
    batch = {t: i for i, t in enumerate(times)}
    return sorted(
        (Admitted(name, k, at, batch[at]) for at, name, k in runs), key=lambda a: (a.batch, a.job)
    )


def live_order(run: LiveRun) -> list[Admitted]:
    """Every admission the watcher saw; batches are the controller's cycles when it ran
    in process, else admissions seen within half a cycle interval of each other."""
    seen = [
        (a.seen, a.cycle, job.name, k + 1)
        for job in run.watcher.jobs.values()
        for k, a in enumerate(job.admissions)
    ]
    seen.sort(key=lambda s: (s[0], s[2]))
    out = []
    if run.in_process and all(cycle is not None for _, cycle, _, _ in seen):
        for at, cycle, name, k in seen:
            assert cycle is not None
            out.append(Admitted(name, k, at, cycle))
    else:
        window = run.plan.scenario.cycle_interval / 2
        batch, start = -1, -math.inf
        for at, _, name, k in seen:
            if at - start > window:
                batch, start = batch + 1, at
            out.append(Admitted(name, k, at, batch))
    return sorted(out, key=lambda a: (a.batch, a.job))


def compare_order(simulated: list[Admitted], live: list[Admitted]) -> Order:
    for i, (s, v) in enumerate(zip(simulated, live, strict=False)):
        if s.label != v.label:
            return Order(
                simulated,
                live,
                i,
                f"position {i + 1}: the simulator admitted {s.label} (t={s.at:.1f} s), "
                f"live {v.label} (t={v.at:.1f} s)",
            )
    if len(simulated) != len(live):
        i = min(len(simulated), len(live))
        longer, extra = ("the simulator", simulated[i]) if i < len(simulated) else ("live", live[i])
        return Order(
            simulated,
            live,
            i,
            f"position {i + 1}: only {longer} admitted more ({extra.label} at t={extra.at:.1f} s; "
            f"{len(simulated)} admissions simulated, {len(live)} live)",
        )
    return Order(simulated, live, None, f"the same {len(live)} admissions in the same order")


# ---- figures -----------------------------------------------------------------------------
def compare_figures(
    simulated: RunResult, live: RunResult
) -> list[tuple[str, object, object, object]]:
    a, b = summarize(simulated), summarize(live)
    out: list[tuple[str, object, object, object]] = []
    for key in a:
        if key in NOT_COMPARED:
            continue
        s, v = a[key], b.get(key)
        if isinstance(s, int | float) and isinstance(v, int | float):
            diff: object = round(v - s, 4)
        else:
            diff = "same" if s == v else "differs"
        out.append((key, s, v, diff))
    return out


# ---- per job -----------------------------------------------------------------------------
def compare(simulated: RunResult, live: RunResult, run: LiveRun) -> Parity:
    """The whole parity report of a live run against the simulator's."""
    interval = run.plan.scenario.cycle_interval
    cycle = interval or 1.0
    sim_jobs = {j.name: j for j in simulated.jobs}
    steps = step_errors(simulated.jobs, live.jobs)
    timings = []
    for job in live.jobs:
        s = sim_jobs[job.name]
        error = None if job.start is None or s.start is None else job.start - s.start
        jct = None if s.end is None else s.end - s.submit
        timing = Timing(
            job.name,
            job.submit,
            s.start,
            job.start,
            None if error is None else round(error, 4),
            None if error is None else round(error / cycle, 3),
            None if error is None or not jct else round(error / jct, 5),
            s.end,
            job.end,
            None if job.end is None or s.end is None else round(job.end - s.end, 4),
        )
        if error is not None and abs(error) >= cycle:
            timing.cause = cause(run, job, s, error, sim_jobs)
        timing.step_error = steps.get(job.name)
        decided = _decided(run, job.name)
        if decided is not None and job.start is not None and s.start is not None:
            timing.decision_error = round(decided - s.start, 4)
            timing.placement = round(job.start - decided, 4)
        timings.append(timing)
    order = compare_order(simulated_order(simulated), live_order(run))
    if order.first_difference is not None:
        order.message += _tie(run, order)
    return Parity(
        run.plan.scenario.name,
        run.plan.speed,
        interval,
        order,
        timings,
        compare_figures(simulated, live),
        list(live.violations),
        list(run.plan.notes) + list(run.notes),
        compare_outages(run.plan.outages, run.watcher.outages, run.end),
    )


def compare_outages(planned: list[Outage], seen: list[NodeDown], end: float) -> str:
    """The outages the replay applied (those due before the run's `end`) against the
    NotReady periods the watcher saw: how many, and how far apart their starts were."""
    due = [o for o in planned if o.start < end]
    if not due and not seen:
        return ""
    starts: dict[str, list[float]] = {}
    for down in seen:
        starts.setdefault(down.node, []).append(down.at)
    gaps = [
        abs(starts[o.node].pop(0) - o.start)
        for o in due
        if starts.get(o.node)  # the same node's outages, in order
    ]
    head = f"{len(due)} simulated, {len(seen)} seen live"
    if len(gaps) == len(due) == len(seen):
        return f"{head}: the same nodes, each down within {max(gaps, default=0.0):.1f} s"
    return f"{head}: {len(gaps)} matched by node (starts within {max(gaps, default=0.0):.1f} s)"


def step_errors(simulated: list[JobRecord], live: list[JobRecord]) -> dict[str, float]:
    """Per job started both ways: its start error (live minus simulated) less the end
    error of the job whose end it waited for, that is one that ended when the simulator
    started it, after its submission (the latest live, if several); its start error if
    it waited for no job's end."""
    live_jobs = {j.name: j for j in live}
    ended: dict[float, list[str]] = {}
    for j in simulated:
        if j.end is not None:
            ended.setdefault(j.end, []).append(j.name)
    out = {}
    for s in simulated:
        v = live_jobs.get(s.name)
        if s.start is None or v is None or v.start is None:
            continue
        waited = ended.get(s.start, []) if s.start > s.submit else []
        late = [end - s.start for n in waited if (end := live_jobs[n].end) is not None]
        out[s.name] = round(v.start - s.start - max(late, default=0.0), 4)
    return out


def _decided(run: LiveRun, job: str) -> float | None:
    """When the in-process controller's cycle that made the job's last admission began
    (scenario seconds), if known."""
    admissions = run.watcher.jobs[job].admissions
    if not admissions or admissions[-1].cycle is None:
        return None
    number = admissions[-1].cycle
    return next((c.at for c in run.cycles if c.number == number), None)


def cause(
    run: LiveRun, live: JobRecord, sim: JobRecord, error: float, sim_jobs: dict[str, JobRecord]
) -> str:
    """Where a start `error` seconds off (live minus simulated) came from, step by step:
    the GangJob seen late, the cycle that admitted it (and what that cycle waited for: a
    release seen late, or the least time between cycles), the record's write and watch,
    the pods' creation and binding. Steps under a tenth of a cycle are left out;
    `sim_jobs` are the simulator's records by name."""
    speed = run.plan.speed
    interval = run.plan.scenario.cycle_interval or 1.0
    seen: JobSeen = run.watcher.jobs[live.name]
    last = seen.admissions[-1]
    assert sim.start is not None

    def took(seconds: float) -> str:
        return f"{seconds:.1f} s ({seconds / speed * 1000:.0f} ms)"

    parts = []
    if seen.created is not None and seen.created - sim.submit >= interval / 10:
        parts.append(
            f"its GangJob was seen {took(seen.created - sim.submit)} after its submit time"
        )
    decided = _decided(run, live.name)
    if decided is not None and abs(decided - sim.start) >= interval / 10:
        why = ""
        if decided > sim.start:
            blocker = _released_before(run, last, since=sim.start - interval)
            previous = max((c.at for c in run.cycles if c.at < decided), default=None)
            if blocker is not None:
                name, released = blocker
                ended = sim_jobs[name].end if name in sim_jobs else None
                was = "" if ended is None else f", which the simulator ended at t={ended:.1f} s"
                why = f" after {name}'s release, seen at t={released:.1f} s{was}"
            elif previous is not None and decided - previous <= interval * 1.5:
                why = f", a cycle after the one at t={previous:.1f} s (cycles {interval:g} s apart)"
        parts.append(
            f"the cycle that admitted it ran at t={decided:.1f} s, "
            f"{decided - sim.start:+.1f} s from the simulator's{why}"
        )
    committed = last.seen - (decided if decided is not None else sim.start)
    if decided is not None and committed >= interval / 10:
        parts.append(f"its record was seen {took(committed)} after that cycle")
    bound = run_start(last) - last.seen
    if bound >= interval / 10:
        parts.append(f"its last pod was bound {took(bound)} after the record")
    head = f"starts {error:+.1f} s ({error / interval:+.1f} cycles)"
    return head + (": " + "; ".join(parts) if parts else "")


def _tie(run: LiveRun, order: Order) -> str:
    """Why two gangs of one instant came in another order, if it is the uid tie-break."""
    i = order.first_difference
    assert i is not None
    if i >= min(len(order.simulated), len(order.live)):
        return ""
    jobs = run.watcher.jobs
    a, b = jobs[order.simulated[i].job], jobs[order.live[i].job]
    priority = {j.spec.name: j.spec.priority for j in run.plan.jobs}
    if a.stamp != b.stamp or priority[a.name] != priority[b.name]:
        return ""
    return (
        f"; a tie: same priority and creationTimestamp ({a.stamp}), which the controller "
        f"breaks by uid ({b.name} {b.uid[:8]}... < {a.name} {a.uid[:8]}...), the simulator "
        "by name (on the built-in emulator uids follow creation order; a real API server "
        "draws them at random)"
    )


def _released_before(run: LiveRun, admission: Admission, since: float) -> tuple[str, float] | None:
    """The last release seen between `since` and the admission: the capacity it waited
    for, as (job, time)."""
    latest: tuple[str, float] | None = None
    for job in run.watcher.jobs.values():
        if job.name == admission.job:
            continue  # its own release (a restart) is not room it waited for
        for a in job.admissions:
            r = a.released
            later = latest is None or (r is not None and r > latest[1])
            if r is not None and since <= r <= admission.seen and later:
                latest = (job.name, r)
    return latest
