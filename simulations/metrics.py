"""Aggregate figures of a run: completion, JCT, queueing, utilisation, deadlock cost."""

from __future__ import annotations

import statistics

from simulations.run import RunResult


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def summarize(result: RunResult) -> dict[str, float | int | str | None]:
    """The comparison row of one run; times in seconds, GPU figures in GPU-hours."""
    done = [j for j in result.jobs if j.end is not None]
    started = [j for j in result.jobs if j.start is not None]
    jct = [j.end - j.submit for j in done if j.end is not None]
    wait = [j.start - j.submit for j in started if j.start is not None]
    busy = sum(
        j.gpus * (min(j.end or result.end_time, result.end_time) - j.start)
        for j in started
        if j.start is not None
    )
    makespan = max((j.end for j in done if j.end is not None), default=None)
    span = result.end_time or 1.0
    return {
        "scenario": result.scenario,
        "scheduler": result.scheduler,
        "jobs": len(result.jobs),
        "completed": len(done),
        "stuck": len(result.jobs) - len(done),
        "deadlock_at_s": result.deadlock_at,
        "jct_mean_s": round(statistics.fmean(jct), 1) if jct else None,
        "jct_p95_s": round(percentile(jct, 0.95), 1) if jct else None,
        "wait_mean_s": round(statistics.fmean(wait), 1) if wait else None,
        "makespan_s": makespan,
        "gpu_utilisation": round(busy / (result.total_gpus * span), 4)
        if result.total_gpus
        else 0.0,
        "idle_held_gpu_h": round(result.idle_held_gpu_seconds / 3600, 2),
        "wasted_gpu_h": round(sum(j.wasted_gpu_seconds for j in result.jobs) / 3600, 2),
        "events": result.events,
    }
