"""Simulator performance: the philly-like scenario end to end, and the bare event kernel.

`bench_sim()` returns plain figures with their targets:
- running `philly-like` (80,000 jobs, 2,504 GPUs) under phalanx with the built-in FIFO
  ordering: wall time (target < 30 s on one core), events per second, and the peak RSS
  of this process (target < 2 GiB; `getrusage` reports the peak since the process
  started, so run it in a fresh interpreter for a clean figure);
- the kernel alone, events that only reschedule themselves (target >= 100,000 events/s).

Run it as `python -m simulations.bench` to print the figures as JSON.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from simulations.kernel import Kernel
from simulations.run import Simulation
from simulations.scenario import shipped_scenario

TARGETS = {"wall_s": 30.0, "peak_rss_mib": 2048.0, "kernel_events_per_s": 100_000.0}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def kernel_events_per_second(events: int = 500_000, timers: int = 1_000) -> float:
    """`timers` handlers each rescheduling itself until `events` events have run."""
    kernel = Kernel()
    left = [events - timers]

    def tick(now: float, step: float) -> None:
        if left[0] > 0:
            left[0] -= 1
            kernel.schedule(now + step, "tick", step)

    kernel.on("tick", tick)
    for i in range(timers):
        kernel.schedule(0.0, "tick", 1.0 + (i % 97) / 97)
    start = time.perf_counter()
    kernel.run()
    return kernel.processed / (time.perf_counter() - start)


def bench_sim(scenario: str = "philly-like", scheduler: str = "phalanx") -> dict[str, object]:
    """Figures of one full run of a shipped scenario plus the kernel microbenchmark."""
    start = time.perf_counter()
    sc = shipped_scenario(scenario)
    sim = Simulation(sc, scheduler)
    loaded = time.perf_counter()
    result = sim.run()
    done = time.perf_counter()
    run_s = done - loaded
    figures: dict[str, float | int | str] = {
        "scenario": sc.name,
        "scheduler": scheduler,
        "jobs": len(result.jobs),
        "completed": sum(1 for j in result.jobs if j.end is not None),
        "gpus": result.total_gpus,
        "setup_s": round(loaded - start, 2),
        "run_s": round(run_s, 2),
        "wall_s": round(done - start, 2),
        "events": result.events,
        "cycles": result.cycles,
        "events_per_s": round(result.events / run_s),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "kernel_events_per_s": round(kernel_events_per_second()),
    }
    met = {
        "wall_s": float(figures["wall_s"]) < TARGETS["wall_s"],
        "peak_rss_mib": float(figures["peak_rss_mib"]) < TARGETS["peak_rss_mib"],
        "kernel_events_per_s": float(figures["kernel_events_per_s"])
        >= TARGETS["kernel_events_per_s"],
    }
    return {**figures, "targets": TARGETS, "met": met}


if __name__ == "__main__":
    print(json.dumps(bench_sim(), indent=2))
