"""`phalanx replay` apart from its terminal output: run, judge, compare, write files.

`run_replay` returns an `Outcome`; the CLI prints it (cli.py), `write_files` puts the
report files of `simulate` (built from the live run, and the simulated one beside it
with `--compare`) plus `parity.json` and `parity.md` in a directory.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from controller.replay.compare import Parity, compare
from controller.replay.plan import ReplayPlan
from controller.replay.result import live_result
from controller.replay.runner import LiveRun, Options, replay
from simulations.run import RunResult, Simulation

T = TypeVar("T")

INVARIANTS = (
    "no device allocated to two claims",
    "no node over its allocatable",
    "no pod bound but as its gang's recorded admission says, no gang left partly bound",
    "quota within every Queue's limits (Queue status, and recomputed from the records)",
    "nothing held once every job was done (pods, devices, quota)",
)


@dataclass
class Outcome:
    plan: ReplayPlan
    run: LiveRun
    live: RunResult
    simulated: RunResult | None = None
    parity: Parity | None = None

    def time_mapping(self) -> str:
        plan = self.plan
        return (
            f"1 scenario second = {1000 / plan.speed:.3g} ms here (--speed {plan.speed:g}); "
            f"cycles at least {plan.scenario.cycle_interval:g} s apart "
            f"({plan.cycle_interval * 1000:.3g} ms"
            + ("" if self.run.in_process else ", if the running controller is set so")
            + f"); the run took {self.run.loop_seconds:.1f} s and stopped: {self.run.stopped}"
        )

    def invariants(self) -> list[str]:
        """One line per check held, or the violations."""
        if self.live.violations:
            return list(self.live.violations)
        watcher = self.run.watcher
        return [
            f"held over {watcher.events} watch events ({watcher.queue_updates} Queue status "
            f"updates): {'; '.join(INVARIANTS)}"
        ]


async def run_replay(plan: ReplayPlan, options: Options, *, with_simulation: bool) -> Outcome:
    return outcome_of(await replay(plan, options), with_simulation=with_simulation)


def serve_replay(main: Coroutine[Any, Any, T]) -> T:
    """Run a live replay's coroutine (`run_replay`, or a caller's around it) as the
    processes it stands for run (`controller.runtime.serve`: the controller, the API
    server): the objects of start-up frozen out of the collector's sight. On Python's
    defaults, a full collection of the replay process (controller, kubelets, watcher)
    or of the emulator's walked every import again: 85-125 ms each, a few per run, and
    they fell in the bursts of allocation that placements are, so a 12-pod gang's
    placement at 60x held one or two of them (6-13 cycles)."""
    from controller.runtime import serve

    return serve(main)


def outcome_of(run: LiveRun, *, with_simulation: bool) -> Outcome:
    """The figures of a finished run, and with `with_simulation` the parity report."""
    outcome = Outcome(run.plan, run, live_result(run))
    if with_simulation:
        outcome.simulated = Simulation(run.plan.scenario, "phalanx").run()
        outcome.parity = compare(outcome.simulated, outcome.live, run)
    return outcome


def write_files(outcome: Outcome, out: Path) -> list[Path]:
    """simulate's files for the live run (and the simulated one), and the parity report."""
    from simulations.report import write_outputs

    results = [r for r in (outcome.simulated, outcome.live) if r is not None]
    written = write_outputs(results, out, description=outcome.plan.scenario.description)
    if outcome.parity is not None:
        data = outcome.parity.as_dict() | {"time": outcome.time_mapping()}
        for name, text in (
            ("parity.json", json.dumps(data, indent=2, default=str) + "\n"),
            ("parity.md", markdown(outcome)),
        ):
            path = out / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def markdown(outcome: Outcome) -> str:
    """The parity report as Markdown: verdict, figures side by side, per-job times."""
    parity = outcome.parity
    assert parity is not None
    summary = parity.summary()
    lines = [
        f"# Parity: {parity.scenario}, live at {parity.speed:g}x against the simulator",
        "",
        outcome.time_mapping() + ".",
        "",
        f"- admission order: {parity.order.message}",
        f"- start times: largest error {summary['start_error_max_s']} s "
        f"({summary['start_error_max_cycles']} cycles, {summary['worst_job']}); p95 "
        f"{summary['start_error_p95_s']} s; {summary['within_one_cycle']} of "
        f"{summary['jobs_compared']} jobs within one cycle; step error (what each admission "
        f"added to the end error of the job it waited for) largest "
        f"{summary['step_error_max_s']} s, mean {summary['step_error_mean_s']} s; decisions "
        f"(the start of the live cycle that admitted a job) at most "
        f"{summary['decision_error_max_s']} s off; placement (from that cycle's start to "
        f"the last pod bound) largest {summary['placement_max_s']} s, mean "
        f"{summary['placement_mean_s']} s",
        f"- invariants: {'; '.join(outcome.invariants())}",
        *([f"- node failures: {parity.failures}"] if parity.failures else []),
        *(f"- note: {n}" for n in parity.notes),
        "",
        "| figure | simulated | live | difference |",
        "|---|---:|---:|---:|",
        *(f"| {k} | {_md(s)} | {_md(v)} | {_md(d)} |" for k, s, v, d in parity.figures),
        "",
        "| job | submit | start (sim) | start (live) | error s | cycles | step s | decision s "
        "| placement s | end (sim) | end (live) | cause |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in parity.timings:
        cells = [
            t.submit,
            t.simulated_start,
            t.live_start,
            t.start_error,
            t.start_error_cycles,
            t.step_error,
            t.decision_error,
            t.placement,
            t.simulated_end,
            t.live_end,
        ]
        lines.append(f"| {t.job} | " + " | ".join(_md(c) for c in cells) + f" | {t.cause} |")
    return "\n".join(lines) + "\n"


def _md(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)
