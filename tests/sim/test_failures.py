"""Node failures: a failed node leaves the engine, its jobs lose their work and run again."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from simulations.run import RunResult, Simulation
from simulations.scenario import Scenario, ScenarioError, parse_scenario

ONE_JOB = "[{name: a, pods: 1, gpusPerPod: 8, duration: 1000}]"
TWO_POD_JOB = "[{name: a, pods: 2, gpusPerPod: 8, duration: 1000}]"


def scenario(jobs: str, failures: str, nodes: int = 1, extra: str = "") -> Scenario:
    text = (
        f"name: f\ncycleInterval: 0\n{extra}"
        f"cluster: [{{name: gpu, count: {nodes}, cpu: '8', gpus: 8}}]\n"
        f"workload: {{jobs: {jobs}}}\nfailures: {failures}\n"
    )
    return parse_scenario(text, "f.yaml")


def run(sc: Scenario, scheduler: str = "phalanx") -> RunResult:
    result = Simulation(sc, scheduler, check=True).run()
    assert result.violations == []
    return result


def test_a_failed_node_kills_its_running_job_and_records_the_lost_work():
    job = run(scenario(ONE_JOB, "[{at: 400, node: gpu-0, downFor: 100}]")).jobs[0]
    assert job.restarts == 1
    assert job.lost_gpu_seconds == 8 * 400


def test_a_killed_job_is_resubmitted_and_runs_again_once_the_node_returns():
    job = run(scenario(ONE_JOB, "[{at: 400, node: gpu-0, downFor: 100}]")).jobs[0]
    assert (job.start, job.end, job.attempts) == (500, 1500, 2)


def test_the_node_and_its_slice_leave_the_engine_while_down_and_come_back():
    failure = "[{at: 400, node: gpu-0, downFor: 100}]"
    down = Simulation(scenario(ONE_JOB, failure, extra="horizon: 450\n"), "phalanx")
    down.run()
    assert "gpu-0" not in down.engine.state.nodes
    assert "gpu-0" not in down.engine.state.inventory.slices
    back = Simulation(scenario(ONE_JOB, failure, extra="horizon: 600\n"), "phalanx")
    back.run()
    assert "gpu-0" in back.engine.state.nodes
    assert "gpu-0" in back.engine.state.inventory.slices


def test_jobs_on_other_nodes_keep_running():
    jobs = (
        "[{name: a, pods: 1, gpusPerPod: 8, duration: 1000},"
        " {name: b, pods: 1, gpusPerPod: 8, duration: 1000}]"
    )
    result = run(scenario(jobs, "[{at: 400, node: gpu-1, downFor: 100}]", nodes=2))
    assert sorted(j.restarts for j in result.jobs) == [0, 1]
    assert [j.end for j in result.jobs if j.restarts == 0] == [1000]


@pytest.mark.parametrize("scheduler", ["phalanx", "per-pod", "gang-timeout"])
def test_a_failure_under_one_pod_kills_the_whole_job(scheduler):
    sim = Simulation(
        scenario(TWO_POD_JOB, "[{at: 400, node: gpu-1, downFor: 100}]", nodes=2),
        scheduler,
        check=True,
    )
    result = sim.run()
    job = result.jobs[0]
    assert result.violations == []
    assert job.restarts == 1
    assert job.lost_gpu_seconds == pytest.approx(16 * 400, abs=1)
    assert job.end == pytest.approx(1500, abs=1)
    assert sim.engine.state.admitted == {}


def test_a_partly_placed_per_pod_job_is_killed_too_and_stops_holding_gpus():
    sc = scenario(TWO_POD_JOB, "[{at: 100, node: gpu-0, downFor: 50}]", extra="horizon: 1000\n")
    result = run(sc, "per-pod")
    job = result.jobs[0]
    assert (job.restarts, job.lost_gpu_seconds, job.start) == (1, 0.0, None)
    assert result.idle_held_gpu_seconds == pytest.approx(8 * 100 + 8 * (1000 - 150))
    assert result.deadlock_at == 150


def test_overlapping_failures_keep_the_node_down_until_the_last_repair():
    failures = "[{at: 100, node: gpu-0, downFor: 300}, {at: 200, node: gpu-0, downFor: 50}]"
    result = run(scenario(ONE_JOB, failures))
    assert result.node_failures == 1
    assert result.jobs[0].start == 400


def test_outages_list_every_failure_that_took_effect_as_it_did():
    failures = (
        "[{at: 100, node: gpu-0, downFor: 300}, {at: 200, node: gpu-0, downFor: 50},"
        " {at: 9000, node: gpu-0, downFor: 10}]"
    )
    simulation = Simulation(scenario(ONE_JOB, failures), "phalanx")
    simulation.run()
    assert simulation.outages == [("gpu-0", 100, 400), ("gpu-0", 200, 250)]


def test_random_outages_are_the_seeds_draws():
    first = Simulation(random_failures(seed=1, nodes=2), "phalanx")
    first.run()
    again = Simulation(random_failures(seed=1, nodes=2), "phalanx")
    again.run()
    assert first.outages == again.outages
    assert len(first.outages) == first.node_failures > 0


def test_failures_after_every_job_finished_change_nothing():
    result = run(scenario(ONE_JOB, "[{at: 5000, node: gpu-0, downFor: 100}]"))
    assert result.node_failures == 0 and result.end_time == 1000


def test_final_runs_still_serve_exactly_the_submitted_work():
    jobs = ", ".join(
        f"{{name: j{i}, submit: {i * 50}, pods: {1 + i % 3}, gpusPerPod: {2 + 2 * (i % 3)}, "
        f"duration: {300 + 70 * i}}}"
        for i in range(12)
    )
    failures = "[{at: 250, node: gpu-1, downFor: 400}, {at: 700, node: gpu-3, downFor: 90}]"
    result = run(scenario(f"[{jobs}]", failures, nodes=4))
    served = sum(j.gpus * (j.end - j.start) for j in result.jobs)
    assert served == pytest.approx(sum(j.gpus * j.duration for j in result.jobs))
    assert sum(j.lost_gpu_seconds for j in result.jobs) > 0


# ---- random failures -------------------------------------------------------------------
def random_failures(seed: int, mtbf_hours: float = 10, nodes: int = 20) -> Scenario:
    long_job = "[{name: a, pods: 1, gpusPerPod: 1, duration: 1.0e9}]"
    failures = f"[{{mtbfHours: {mtbf_hours}, repairSeconds: 60}}]"
    return scenario(long_job, failures, nodes, extra=f"seed: {seed}\nhorizon: 360000\n")


def fingerprint(result: RunResult) -> str:
    return json.dumps(asdict(result), sort_keys=True)


def test_random_failures_are_reproducible_from_the_seed():
    first = Simulation(random_failures(seed=1), "phalanx").run()
    again = Simulation(random_failures(seed=1), "phalanx").run()
    other = Simulation(random_failures(seed=2), "phalanx").run()
    assert fingerprint(first) == fingerprint(again) != fingerprint(other)


def test_random_failures_happen_at_the_rate_the_mtbf_gives():
    result = Simulation(random_failures(seed=3), "phalanx").run()
    expected = 20 * 100 / 10  # nodes x hours / mtbf
    assert result.node_failures == pytest.approx(expected, rel=0.2)


def test_random_failures_kill_and_restart_the_jobs_on_failed_nodes():
    job = Simulation(random_failures(seed=3, nodes=2), "phalanx").run().jobs[0]
    assert job.restarts > 0 and job.lost_gpu_seconds > 0


@pytest.mark.parametrize(
    ("failures", "message"),
    [
        ("[{mtbfHours: 5, repairSeconds: 60}]", "f.yaml: failures[0].mtbfHours: random failures"),
        ("[{at: 5, node: gpu-9, downFor: 60}]", "f.yaml: failures[0].node: no node 'gpu-9'"),
        ("[{at: 5, node: gpu-0}]", "f.yaml: failures[0].downFor: is required with at, node"),
        (
            "[{at: 5, node: gpu-0, downFor: 1, mtbfHours: 2}]",
            "f.yaml: failures[0]: mixes a fixed failure (at, node, downFor) with a random one",
        ),
        (
            "[{mtbfHours: 5, repairSeconds: 60, group: cpu}]",
            "f.yaml: failures[0].group: no node group 'cpu'",
        ),
        ("[{}]", "f.yaml: failures[0]: a failure is either {at, node, downFor} or"),
    ],
)
def test_a_broken_failure_names_the_field_at_fault(failures, message):
    with pytest.raises(ScenarioError) as err:
        scenario(ONE_JOB, failures)
    assert message in str(err.value)
