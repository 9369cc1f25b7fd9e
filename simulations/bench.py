"""Simulator performance: the philly-like scenarios end to end, and the bare event kernel.

`bench_sim()` returns plain figures with their targets:
- each scenario under phalanx with its own policies (priority FIFO), in a fresh process:
  wall time, events, events per second, the peak backlog (gangs pending at a cycle) and
  the peak RSS of that process. `philly-like` (80,000 jobs, 2,504 GPUs, small backlog):
  wall < 30 s on one core, RSS < 2 GiB; `philly-like-busy` (the same jobs on a quarter
  of the GPUs, backlog in the tens of thousands): wall < 60 s;
- the kernel alone, events that only reschedule themselves (target >= 100,000 events/s).

Run it as `python -m simulations.bench` to print the figures as JSON.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from simulations.kernel import Kernel
from simulations.run import Simulation
from simulations.scenario import shipped_scenario

SCENARIOS = ("philly-like", "philly-like-busy")
SCENARIO_TARGETS = {
    "philly-like": {"wall_s": 30.0, "peak_rss_mib": 2048.0},
    "philly-like-busy": {"wall_s": 60.0, "peak_rss_mib": 2048.0},
}
KERNEL_TARGET = 100_000.0


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


def run_scenario(scenario: str, scheduler: str = "phalanx") -> dict[str, float | int | str]:
    """Figures of one full run of a shipped scenario (run it in a fresh process)."""
    start = time.perf_counter()
    sc = shipped_scenario(scenario)
    sim = Simulation(sc, scheduler)
    loaded = time.perf_counter()
    result = sim.run()
    done = time.perf_counter()
    run_s = done - loaded
    return {
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
        "peak_backlog": result.peak_backlog,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def bench_sim(scenarios: tuple[str, ...] = SCENARIOS) -> dict[str, object]:
    """Each scenario's figures (keys `<scenario>.<figure>`), each run in a fresh process,
    then the kernel microbenchmark; with targets and verdicts."""
    figures: dict[str, float | int | str] = {}
    targets: dict[str, float] = {}
    spawn = multiprocessing.get_context("spawn")
    for name in scenarios:
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            own = pool.submit(run_scenario, name).result()
        figures.update({f"{name}.{k}": v for k, v in own.items()})
        targets.update({f"{name}.{k}": t for k, t in SCENARIO_TARGETS.get(name, {}).items()})
    figures["kernel_events_per_s"] = round(kernel_events_per_second())
    targets["kernel_events_per_s"] = KERNEL_TARGET
    met = {
        k: float(figures[k]) >= t if k.endswith("_per_s") else float(figures[k]) < t
        for k, t in targets.items()
    }
    return {**figures, "targets": targets, "met": met}


if __name__ == "__main__":
    print(json.dumps(bench_sim(), indent=2))
