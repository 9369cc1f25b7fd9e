"""`phalanx bench replay`: how far a live replay drifts from the simulator as it speeds up.

Each scenario runs live at each speed on the wall clock: the API emulator in its own
process (uids in creation order, our CRDs), the controller, the simulated kubelets and
the watcher in this one, exactly as `phalanx replay --kubeconfig` would run them. A run
is compared with the simulator's (`controller/replay/compare.py`): the largest, p95 and
mean start-time error in scenario seconds, the largest in cycles, the largest and mean
step error (what each admission added to the end error of the job it waited for: errors
add up along chains of jobs, step errors do not), whether the admission order is the same,
and whether every job completed with the invariants held.

API and watch latency are not sped up, so at 600x every millisecond of it is 0.6
scenario seconds: the error grows with the speed, which is the point of the figures. The
`virtual` row runs the same at 60x on a looptime event loop (when looptime, a test
dependency, is installed): the clock only moves when everything waits, so requests take
no time and what is left is the difference in decisions. Horizons are lifted, so every
job runs and counts, however late.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from controller.replay.command import run_replay, serve_replay
from controller.replay.plan import build
from controller.replay.runner import Options
from simulations.scenario import shipped_scenario

SPEEDS = (60.0, 600.0, 6000.0)
SCENARIOS = ("minimal-deadlock", "default")
TARGET_SPEED = 60.0
"""Issue 12: at 60x, every job starts within one cycle of its simulated start."""


def _serve_emulator(conn: Connection) -> None:
    """The API server process: CRDs loaded, uids in creation order; sends the kubeconfig
    path, serves until told to stop."""
    from emulator.server import Emulator

    crds = Path(__file__).parents[2] / "crds"

    async def main() -> None:
        async with Emulator(controllers=True, ordered_uids=True) as emulator:
            for manifest in sorted(crds.glob("*.yaml")):
                await emulator.load(manifest)
            conn.send(str(emulator.kubeconfig_path))
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    serve_replay(main())


def one(scenario: str, speed: float, *, virtual: bool = False) -> dict[str, Any]:
    """One live run of a shipped scenario at `speed`: against a fresh emulator process on
    the wall clock, or (`virtual`) all in this process on looptime."""
    plan = build(shipped_scenario(scenario).model_copy(update={"horizon": None}), speed)
    started, cpu = time.perf_counter(), time.process_time()
    if virtual:
        import looptime

        loop = looptime.new_event_loop(start=0, noop_cycles=200, idle_step=1e-4)
        try:
            replaying = run_replay(plan, Options(announce=lambda _: None), with_simulation=True)
            outcome = loop.run_until_complete(replaying)
        finally:
            loop.close()
    else:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        server = context.Process(target=_serve_emulator, args=(child,))
        server.start()
        try:
            options = Options(kubeconfig=Path(parent.recv()), announce=lambda _: None)
            started, cpu = time.perf_counter(), time.process_time()
            outcome = serve_replay(run_replay(plan, options, with_simulation=True))
        finally:
            parent.send("stop")
            server.join(timeout=30)
            if server.is_alive():
                server.kill()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert outcome.parity is not None
    summary = outcome.parity.summary()
    done = sum(1 for j in outcome.live.jobs if j.end is not None)
    return {
        "start_error_max_s": summary["start_error_max_s"],
        "start_error_p95_s": summary["start_error_p95_s"],
        "start_error_mean_s": summary["start_error_mean_s"],
        "start_error_max_cycles": summary["start_error_max_cycles"],
        "step_error_max_s": summary["step_error_max_s"],
        "step_error_mean_s": summary["step_error_mean_s"],
        "decision_error_max_s": summary["decision_error_max_s"],
        "placement_max_s": summary["placement_max_s"],
        "placement_mean_s": summary["placement_mean_s"],
        "admission_order_same": summary["admission_order_same"],
        "completed": f"{done}/{len(outcome.live.jobs)}",
        "invariants_held": summary["invariants_held"],
        "wall_s": round(wall, 1),
        "replay_process_cpu_s": round(cpu, 1),
    }


def run(
    scenarios: tuple[str, ...] = SCENARIOS, speeds: tuple[float, ...] = SPEEDS
) -> tuple[dict[str, Any], dict[str, float], dict[str, bool]]:
    """(figures, targets, met) for every scenario at every speed."""
    figures: dict[str, Any] = {}
    targets: dict[str, float] = {}
    met: dict[str, bool] = {}
    try:
        import looptime  # noqa: F401

        runs = [("virtual", TARGET_SPEED, True)]
    except ImportError:
        runs = []
    runs += [(f"{speed:g}x", speed, False) for speed in speeds]
    for scenario in scenarios:
        for label, speed, virtual in runs:
            prefix = f"{scenario} {label}"
            for key, value in one(scenario, speed, virtual=virtual).items():
                figures[f"{prefix} {key}"] = value
            if speed == TARGET_SPEED:
                key = f"{prefix} start_error_max_cycles"
                targets[key] = 1.0
                value = figures[key]
                met[key] = value is not None and value < 1.0
    return figures, targets, met
