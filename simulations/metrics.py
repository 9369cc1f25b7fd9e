"""Figures of a run, derived from its job records alone: per-job rows, aggregates, series.

Everything here reads `RunResult`/`JobRecord` and nothing else, so a result saved by an
older or newer simulator can still be summarised. Fields the simulator may not record
(`restarts`, `lost_gpu_seconds`) count as 0 when absent.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from simulations.run import JobRecord, RunResult

Row = dict[str, float | int | str | None]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty list: always an observed value.

    The smallest value with at least `q` of the list at or below it, so p50 of [1, 2, 3, 4]
    is 2 and p99 of 100 values is the 99th smallest.
    """
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) - 1e-9)
    return ordered[max(0, min(len(ordered) - 1, rank - 1))]


def _ms(value: float | None) -> float | None:
    """Virtual times to the millisecond: keeps CSVs free of float noise (0.030000000000000002)."""
    return None if value is None else round(value, 3)


def job_state(job: JobRecord, end_time: float) -> str:
    """Where a job ended up when the run stopped.

    `partial` means some pods hold resources but the job never started (the deadlock
    symptom); `not-submitted` means the run stopped before the job's submit time;
    `never-fit` that the cluster or the job's queue is too small for it.
    """
    if job.end is not None:
        return "done"
    if job.start is not None:
        return "running"
    if job.submit > end_time:
        return "not-submitted"
    if getattr(job, "never_fit", None):
        return "never-fit"
    return "partial" if job.placed else "waiting"


def job_rows(result: RunResult) -> list[Row]:
    """One row per job, in submission order of the scenario; times in virtual seconds.

    `start` is when the job was admitted as a whole (all pods placed), `wait` is start minus
    submit and `jct` is end minus submit; both are None if the job never got there.
    """
    rows: list[Row] = []
    for j in result.jobs:
        rows.append(
            {
                "job": j.name,
                "queue": j.queue,
                "state": job_state(j, result.end_time),
                "pods": j.pods,
                "gpus": j.gpus,
                "duration_s": _ms(j.duration),
                "submit_s": _ms(j.submit),
                "start_s": _ms(j.start),
                "end_s": _ms(j.end),
                "wait_s": _ms(None if j.start is None else j.start - j.submit),
                "jct_s": _ms(None if j.end is None else j.end - j.submit),
                "attempts": j.attempts,
                "wasted_gpu_s": _ms(j.wasted_gpu_seconds),
                "restarts": int(getattr(j, "restarts", 0) or 0),
                "preemptions": j.preemptions,
                "lost_gpu_s": _ms(float(getattr(j, "lost_gpu_seconds", 0.0) or 0.0)),
            }
        )
    return rows


def served_gpu_seconds(job: JobRecord, end_time: float) -> float:
    """GPU-seconds of progress a job made before the run stopped: its current or last run
    plus what checkpoints kept of interrupted runs (work lost to kills and preemptions is
    in `lost_gpu_seconds` instead)."""
    kept = job.kept_gpu_seconds
    if job.start is None:
        return kept
    stop = end_time if job.end is None else min(job.end, end_time)
    return kept + job.gpus * max(0.0, stop - job.start)


def queue_service(result: RunResult) -> dict[str, float]:
    """Per queue, the fraction of its GPU demand served during the run, in [0, 1].

    Demand is GPU x duration summed over the queue's jobs submitted before the run stopped;
    served is the GPU-seconds those jobs actually ran. Queues with no GPU demand are left
    out: they cannot be treated unfairly in GPU terms.
    """
    demand: dict[str, float] = {}
    served: dict[str, float] = {}
    for j in result.jobs:
        if j.gpus == 0 or j.submit > result.end_time:
            continue
        demand[j.queue] = demand.get(j.queue, 0.0) + j.gpus * j.duration
        served[j.queue] = served.get(j.queue, 0.0) + served_gpu_seconds(j, result.end_time)
    return {q: min(1.0, served[q] / demand[q]) for q in sorted(demand)}


def queue_slowdown(result: RunResult) -> dict[str, float]:
    """Per queue, the GPU-weighted slowdown of its jobs: sum g*(end - submit) / sum g*duration.

    1.0 means the queue's jobs ran as soon as they were submitted; 3.0 that, GPU for GPU,
    they took three times their run time. Jobs not finished count up to the end of the run
    (a lower bound). Weighting by GPUs keeps a swarm of tiny jobs from dominating it.
    """
    waited: dict[str, float] = {}
    needed: dict[str, float] = {}
    for j in result.jobs:
        if j.gpus == 0 or j.submit > result.end_time:
            continue
        stop = result.end_time if j.end is None else j.end
        waited[j.queue] = waited.get(j.queue, 0.0) + j.gpus * (stop - j.submit)
        needed[j.queue] = needed.get(j.queue, 0.0) + j.gpus * j.duration
    return {q: waited[q] / needed[q] for q in sorted(needed)}


def jain_index(values: list[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all equal, 1/n when one has all.

    None when there is nothing to compare (no values, or all zero).
    """
    square_sum = sum(x * x for x in values)
    if not values or square_sum == 0:
        return None
    return sum(values) ** 2 / (len(values) * square_sum)


def fairness(result: RunResult) -> float | None:
    """Jain's index over queues of the share of each queue's GPU demand that was served.

    A queue's share is `queue_service`: served GPU-seconds / demanded GPU-seconds. 1.0 means
    every queue got the same fraction of what it asked for; 1/n means one queue of n was
    served and the others starved. Queue weights and quotas are not in the result, so this
    measures equal treatment relative to demand, not adherence to weights. With a single
    queue it is trivially 1.0; when every queue is fully served it is 1.0 whatever the waits.
    """
    return jain_index(list(queue_service(result).values()))


def slowdown_fairness(result: RunResult) -> float | None:
    """Jain's index over queues of 1 / `queue_slowdown`: do all queues' jobs wait alike?

    Unlike `fairness` it tells apart runs that finish everything, but it rates equal misery
    as fair and counts intended differences (quotas, weights) as unfairness.
    """
    return jain_index([1 / s for s in queue_slowdown(result).values() if s > 0])


def summarize(result: RunResult) -> Row:
    """The comparison row of one run; times in seconds, GPU figures in GPU-hours.

    `makespan_s` is the last completion time and None unless every job completed: with a
    job still stuck the makespan is unbounded, and the time of the last lucky completion
    would flatter a deadlocked run. `gpu_utilisation` counts only runs that were kept: a
    run killed by a node failure is in `lost_gpu_h` instead. Waits run from submission to
    the last start, so a restarted job's wait includes its lost run and its requeueing.
    """
    done = [j for j in result.jobs if j.end is not None]
    jct = [j.end - j.submit for j in done if j.end is not None]
    wait = [j.start - j.submit for j in result.jobs if j.start is not None]
    busy = sum(served_gpu_seconds(j, result.end_time) for j in result.jobs)
    complete = len(done) == len(result.jobs)
    makespan = max((j.end for j in done if j.end is not None), default=None) if complete else None
    span = result.end_time or 1.0
    fair = fairness(result)
    fair_wait = slowdown_fairness(result)
    return {
        "scenario": result.scenario,
        "scheduler": result.scheduler,
        "jobs": len(result.jobs),
        "completed": len(done),
        "stuck": len(result.jobs) - len(done),
        "never_fit": sum(1 for j in result.jobs if getattr(j, "never_fit", None)),
        "deadlock_at_s": result.deadlock_at,
        "jct_mean_s": round(statistics.fmean(jct), 1) if jct else None,
        "jct_p50_s": round(percentile(jct, 0.50), 1) if jct else None,
        "jct_p95_s": round(percentile(jct, 0.95), 1) if jct else None,
        "jct_p99_s": round(percentile(jct, 0.99), 1) if jct else None,
        "wait_mean_s": round(statistics.fmean(wait), 1) if wait else None,
        "wait_p95_s": round(percentile(wait, 0.95), 1) if wait else None,
        "makespan_s": None if makespan is None else round(makespan, 1),
        "run_s": round(result.end_time, 1),
        "gpu_utilisation": round(busy / (result.total_gpus * span), 4)
        if result.total_gpus
        else 0.0,
        "idle_held_gpu_h": round(result.idle_held_gpu_seconds / 3600, 2),
        "fragmentation": round(result.fragmentation, 4),
        "wasted_gpu_h": round(sum(j.wasted_gpu_seconds for j in result.jobs) / 3600, 2),
        "restarts": sum(int(getattr(j, "restarts", 0) or 0) for j in result.jobs),
        "preemptions": sum(j.preemptions for j in result.jobs),
        "lost_gpu_h": round(
            sum(float(getattr(j, "lost_gpu_seconds", 0.0) or 0.0) for j in result.jobs) / 3600, 2
        ),
        "node_failures": int(getattr(result, "node_failures", 0) or 0),
        "fairness_jain": None if fair is None else round(fair, 4),
        "slowdown_fairness_jain": None if fair_wait is None else round(fair_wait, 4),
        "events": result.events,
    }


# ---- time series ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """Mean level per time bin: bin i covers [edges[i], edges[i + 1]) and has `values[i]`.

    Means rather than samples so that nothing shorter than a bin is missed and the area
    under the curve equals the exact integral (e.g. GPU-seconds).
    """

    edges: np.ndarray
    values: np.ndarray


class Utilisation(NamedTuple):
    busy: Series
    held_idle: Series


def time_edges(end_time: float, step: float) -> np.ndarray:
    """Bin edges 0, step, 2*step, ... with the last bin cut short at `end_time`."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    if end_time <= 0:
        return np.zeros(1)
    bins = math.ceil(end_time / step - 1e-9)
    return np.minimum(np.arange(bins + 1, dtype=float) * step, end_time)


def bin_means(
    starts: np.ndarray, ends: np.ndarray, weights: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """Mean over each bin of the sum of `weights[k]` over intervals [starts[k], ends[k]).

    Sorting the 2n interval boundaries once gives the level as a step function and its
    running integral; the integral at each edge is then one binary search away, so the cost
    is O((n + bins) log n) however long the intervals are.
    """
    if len(edges) < 2:
        return np.zeros(0)
    keep = ends > starts
    times = np.concatenate([starts[keep], ends[keep]])
    if times.size == 0:
        return np.zeros(len(edges) - 1)
    deltas = np.concatenate([weights[keep], -weights[keep]]).astype(float)
    order = np.argsort(times, kind="stable")
    times, deltas = times[order], deltas[order]
    level = np.cumsum(deltas)
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times))])
    k = np.searchsorted(times, edges, side="right") - 1
    safe = np.maximum(k, 0)
    integral = np.where(k >= 0, area[safe] + level[safe] * (edges - times[safe]), 0.0)
    return np.diff(integral) / np.diff(edges)


def _column(jobs: list[JobRecord], get: Callable[[JobRecord], float]) -> np.ndarray:
    return np.fromiter((get(j) for j in jobs), dtype=float, count=len(jobs))


def utilisation_series(result: RunResult, step: float) -> Utilisation:
    """GPUs running jobs, and GPUs held idle by partially placed jobs, per time bin.

    Busy: each started job's GPUs over [start, end), cut at the end of the run. Held idle
    (per-pod and gang-timeout only) is reconstructed from the records and so approximate:
    a job never started holds `placed` pods' GPUs over [first_placed_at, end of run); a
    started job held all but its last pod's GPUs over [first_placed_at, start), an upper
    bound since its pods arrived one by one. Pods placed late are counted from the first
    placement, so held idle is also capped at the GPUs not running jobs. Runs cut short by
    preemption or a node failure (`interrupted`) count as busy; holds given up by
    gang-timeout (`wasted_gpu_seconds`) or killed before their job ran do not show.
    """
    end = result.end_time
    edges = time_edges(end, step)
    jobs = result.jobs
    start = _column(jobs, lambda j: np.nan if j.start is None else j.start)
    stop = _column(jobs, lambda j: end if j.end is None else j.end)
    gpus = _column(jobs, lambda j: j.gpus)
    pods = _column(jobs, lambda j: j.pods)
    placed = _column(jobs, lambda j: j.placed)
    first = _column(jobs, lambda j: np.nan if j.first_placed_at is None else j.first_placed_at)

    ran = ~np.isnan(start)
    busy = bin_means(start[ran], np.minimum(stop[ran], end), gpus[ran], edges)
    cut = [(a, b, j.gpus) for j in jobs for a, b in getattr(j, "interrupted", ())]
    if cut:
        a, b, g = (np.array(col, dtype=float) for col in zip(*cut, strict=True))
        busy = busy + bin_means(a, np.minimum(b, end), g, edges)

    partial = ~np.isnan(first)
    per_pod = gpus[partial] / pods[partial]
    held_until = np.where(ran[partial], start[partial], end)
    held = np.where(ran[partial], gpus[partial] - per_pod, placed[partial] * per_pod)
    idle = bin_means(first[partial], np.minimum(held_until, end), held, edges)
    if result.total_gpus:
        idle = np.minimum(idle, np.maximum(result.total_gpus - busy, 0.0))
    return Utilisation(Series(edges, busy), Series(edges, idle))


def queue_length_series(result: RunResult, step: float) -> Series:
    """Jobs submitted but not yet started (waiting or partially placed), mean per time bin.

    A job counts from its submission to its last start; a job killed by a node failure and
    restarted therefore also counts as waiting while its lost run was going.
    """
    end = result.end_time
    edges = time_edges(end, step)
    jobs = result.jobs
    submit = _column(jobs, lambda j: j.submit)
    start = _column(jobs, lambda j: end if j.start is None else min(j.start, end))
    return Series(edges, bin_means(submit, start, np.ones(len(jobs)), edges))
