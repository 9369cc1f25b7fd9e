"""Shipped scenarios replayed live (`phalanx replay --compare`) on the API emulator, on
virtual time, held to the simulator's run of the same scenario.

Each scenario is replayed once (on a looptime loop: requests take no time, so what is
compared is what the controller decided, not how fast the machine is) and the tests read
the outcome: the same admissions in the same order, every job completed, every invariant
held on the live objects, every job started within one cycle of its simulated start.
`multi-tenant-200` (the first 200 jobs of multi-tenant, through its node failure) takes
about 40 s of CPU; `default-with-failures` has a failure that kills a running gang;
`default-random-failures` has random failures (the seed's draws kill two running gangs,
which restart at once) and checkpoints.
"""

from __future__ import annotations

import logging

import looptime
import pytest

from controller.replay.command import Outcome, run_replay
from controller.replay.plan import build, first_jobs, merged
from controller.replay.runner import Options
from simulations.run import Simulation
from simulations.scenario import FailureSpec, Scenario, shipped_scenario

SPEED = 60.0
_OUTCOMES: dict[str, Outcome] = {}


def with_failures(scenario: Scenario) -> Scenario:
    """`default` with gpu-0 down while train-a runs on it, and a later failure."""
    failures = [
        FailureSpec.model_validate({"at": 1000, "node": "gpu-0", "downFor": 600}),
        FailureSpec.model_validate({"at": 5000, "node": "gpu-5", "downFor": 300}),
    ]
    return scenario.model_copy(update={"failures": failures, "name": "default-with-failures"})


def with_random_failures(scenario: Scenario) -> Scenario:
    """`default` with random failures (seed 1 draws two, each under a running training
    gang) and a checkpoint every 300 s."""
    failures = [FailureSpec.model_validate({"mtbfHours": 40, "repairSeconds": 600})]
    return scenario.model_copy(
        update={
            "failures": failures,
            "seed": 1,
            "checkpoint_interval": 300.0,
            "name": "default-random-failures",
        }
    )


SCENARIOS = {
    "minimal-deadlock": lambda: shipped_scenario("minimal-deadlock"),
    "deadlock-two-gangs": lambda: shipped_scenario("deadlock-two-gangs"),
    "default": lambda: shipped_scenario("default"),
    "default-with-failures": lambda: with_failures(shipped_scenario("default")),
    "default-random-failures": lambda: with_random_failures(shipped_scenario("default")),
    "multi-tenant-200": lambda: first_jobs(shipped_scenario("multi-tenant"), 200),
}
NAMES = [
    pytest.param(name, marks=pytest.mark.slow) if name == "multi-tenant-200" else name
    for name in SCENARIOS
]


def outcome(name: str) -> Outcome:
    """The scenario replayed live and compared (once per test session)."""
    if name not in _OUTCOMES:
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        plan = build(SCENARIOS[name](), SPEED)
        loop = looptime.new_event_loop(start=0, noop_cycles=200, idle_step=1e-4)
        try:
            replaying = run_replay(plan, Options(announce=lambda _: None), with_simulation=True)
            _OUTCOMES[name] = loop.run_until_complete(replaying)
        finally:
            loop.close()
    return _OUTCOMES[name]


@pytest.mark.parametrize("name", NAMES)
def test_live_admits_the_same_gangs_in_the_same_order_as_the_simulator(name: str) -> None:
    parity = outcome(name).parity
    assert parity is not None
    assert parity.order.same, parity.order.message
    assert len(parity.order.live) >= len(parity.timings)


@pytest.mark.parametrize("name", NAMES)
def test_every_job_completes_live(name: str) -> None:
    run = outcome(name)
    assert run.run.stopped == "every job done"
    assert [j.name for j in run.live.jobs if j.end is None] == []


@pytest.mark.parametrize("name", NAMES)
def test_the_invariants_hold_on_the_live_objects(name: str) -> None:
    run = outcome(name)
    assert run.live.violations == []
    assert run.run.watcher.events > 0


@pytest.mark.parametrize("name", NAMES)
def test_every_job_starts_within_one_cycle_of_its_simulated_start(name: str) -> None:
    parity = outcome(name).parity
    assert parity is not None
    late = [(t.job, t.start_error, t.cause) for t in parity.timings if t.start_error is None]
    late += [
        (t.job, t.start_error, t.cause)
        for t in parity.timings
        if t.start_error is not None and abs(t.start_error) >= parity.cycle_interval
    ]
    assert late == []


@pytest.mark.parametrize("name", ["minimal-deadlock", "default", "default-random-failures"])
def test_each_start_splits_into_its_decision_and_its_placement(name: str) -> None:
    """On virtual time requests take none: each live decision is the simulator's (the
    cycle that admitted a job began at its simulated start) and placement takes no time."""
    parity = outcome(name).parity
    assert parity is not None
    for t in parity.timings:
        assert t.decision_error == pytest.approx(0.0, abs=1e-3), t.job  # outages: to the ms
        assert t.placement == pytest.approx(0.0, abs=1e-3), t.job
        assert t.start_error == pytest.approx(t.decision_error + t.placement, abs=1e-3)


def test_a_failure_on_a_running_gang_restarts_it_live_as_in_the_simulator() -> None:
    run = outcome("default-with-failures")
    figures = {k: (s, v) for k, s, v, _ in run.parity.figures} if run.parity else {}
    assert figures["restarts"] == (1, 1)
    assert figures["node_failures"] == (2, 2)
    assert figures["lost_gpu_h"][0] == figures["lost_gpu_h"][1] > 0


def test_random_failures_take_the_same_nodes_down_live_when_the_simulator_does() -> None:
    run = outcome("default-random-failures")
    simulation = Simulation(SCENARIOS["default-random-failures"](), "phalanx")
    simulation.run()
    drawn = [(o.node, o.start, o.start + o.length) for o in merged(simulation.outages)]
    seen = [(d.node, d.at, d.until) for d in run.run.watcher.outages]
    assert len(drawn) == 2
    assert [d[0] for d in seen] == [d[0] for d in drawn]
    for (_, start, end), (_, at, until) in zip(drawn, seen, strict=True):
        assert at == pytest.approx(start, abs=1e-3)
        assert until == pytest.approx(end, abs=1e-3)


def test_a_gang_killed_live_resumes_from_its_last_checkpoint_as_in_the_simulator() -> None:
    run = outcome("default-random-failures")
    assert run.parity is not None and run.simulated is not None
    figures = {k: (s, v) for k, s, v, _ in run.parity.figures}
    assert figures["restarts"] == (2, 2)
    assert figures["lost_gpu_h"][0] == figures["lost_gpu_h"][1]
    kept = {j.name: j.kept_gpu_seconds for j in run.live.jobs if j.kept_gpu_seconds}
    assert kept == {j.name: j.kept_gpu_seconds for j in run.simulated.jobs if j.kept_gpu_seconds}
    assert kept  # the checkpoints kept work: train-a ran 303 s, kept its 300
    ends = [(t.job, t.end_error) for t in run.parity.timings]
    assert all(abs(e or 0.0) < run.parity.cycle_interval for _, e in ends), ends
