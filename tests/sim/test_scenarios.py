"""Shipped scenarios: per-pod placement deadlocks, all-or-nothing admission does not."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli import app
from simulations.metrics import summarize
from simulations.run import Simulation
from simulations.scenario import (
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenario,
)

SCENARIOS = Path(__file__).parents[2] / "simulations" / "scenarios"


def run(name: str, scheduler: str):
    return Simulation(shipped_scenario(name), scheduler, check=True).run()


@pytest.mark.parametrize("name", ["deadlock-two-gangs", "minimal-deadlock"])
def test_per_pod_placement_deadlocks(name):
    result = run(name, "per-pod")
    assert result.deadlock_at is not None
    assert all(j.end is None for j in result.jobs)
    assert result.idle_held_gpu_seconds > 0


@pytest.mark.parametrize("name", ["deadlock-two-gangs", "minimal-deadlock", "default"])
def test_phalanx_finishes_every_job_without_holding_idle_gpus(name):
    result = run(name, "phalanx")
    assert result.deadlock_at is None and result.violations == []
    assert all(j.end is not None for j in result.jobs)
    assert result.idle_held_gpu_seconds == 0


def test_gang_timeout_recovers_by_throwing_work_away():
    result = run("minimal-deadlock", "gang-timeout")
    assert result.deadlock_at is None
    assert sum(j.wasted_gpu_seconds for j in result.jobs) > 0
    assert max(j.attempts for j in result.jobs) > 1


def first_jobs(sc: Scenario, jobs: int) -> Scenario:
    """The scenario with only the first `jobs` jobs of its generated workload."""
    synthetic = sc.workload.synthetic
    if synthetic is None or synthetic.jobs <= jobs:
        return sc
    workload = sc.workload.model_copy(
        update={"synthetic": synthetic.model_copy(update={"jobs": jobs})}
    )
    return sc.model_copy(update={"workload": workload})


def test_every_shipped_scenario_runs_under_every_scheduler_it_names():
    # invariants are checked after every event: big generated workloads on their first
    # 1,000 jobs (the whole of philly-like is the benchmark's job, not a test's)
    for path in sorted(SCENARIOS.glob("*.yaml")):
        sc = first_jobs(load_scenario(path), 1000)
        for scheduler in sc.schedulers:
            assert Simulation(sc, scheduler, check=True).run().violations == []


def test_same_scenario_and_seed_give_identical_results():
    first = summarize(run("default", "gang-timeout"))
    assert summarize(run("default", "gang-timeout")) == first


def test_gpu_seconds_served_equal_the_work_submitted_without_a_horizon():
    sc = shipped_scenario("default").model_copy(update={"horizon": None})
    result = Simulation(sc, "phalanx").run()
    served = sum(j.gpus * (j.end - j.start) for j in result.jobs)
    assert served == pytest.approx(sum(j.gpus * j.duration for j in result.jobs))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ncluster: []\nworkload: {jobs: []}", "cluster: "),
        ("- a\n- b", "a scenario is a YAML mapping, got list"),
        ("name: [unclosed", "not valid YAML"),
        (
            "name: x\ncluster: [{name: n, count: 1}]\n"
            "workload: {jobs: [{name: j, pods: 1, duration: 1, queue: nope}]}",
            "queue 'nope' is not defined in queues",
        ),
        (
            "name: x\ncluster: [{name: n, count: 0}]\n"
            "workload: {jobs: [{name: j, pods: 1, duration: 1}]}",
            "cluster[0].count",
        ),
        (
            "name: x\ncluster: [{name: n, count: 1, gpuz: 2}]\n"
            "workload: {jobs: [{name: j, pods: 1, duration: 1}]}",
            "cluster[0].gpuz",
        ),
    ],
)
def test_a_broken_scenario_names_the_field_at_fault(text, message):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "bad.yaml")
    assert message in str(err.value) and str(err.value).startswith("bad.yaml")


def test_simulate_without_arguments_runs_the_default_comparison():
    out = CliRunner().invoke(app, ["simulate"])
    assert out.exit_code == 0, out.output
    assert "per-pod: deadlocked at" in out.output
    assert "phalanx" in out.output


def test_simulate_reports_a_broken_scenario_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    out = CliRunner().invoke(app, ["simulate", str(bad)])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "cluster" in out.output


def test_a_synthetic_workload_serves_exactly_the_work_submitted_without_a_horizon():
    sc = shipped_scenario("multi-tenant").model_copy(update={"horizon": None, "failures": []})
    result = Simulation(sc, "phalanx").run()
    assert all(j.end is not None for j in result.jobs)
    served = sum(j.gpus * (j.end - j.start) for j in result.jobs)
    assert served == pytest.approx(sum(j.gpus * j.duration for j in result.jobs))


def test_a_synthetic_scenario_with_failures_gives_byte_identical_results_for_its_seed():
    def fingerprint() -> str:
        result = Simulation(shipped_scenario("multi-tenant"), "phalanx").run()
        return json.dumps(asdict(result), sort_keys=True)

    assert fingerprint() == fingerprint()


def peak_gpus(result, queue: str) -> int:
    changes = sorted(
        (t, g)
        for j in result.jobs
        if j.queue == queue and j.start is not None
        for t, g in ((j.start, j.gpus), (j.end, -j.gpus))
    )
    running = peak = 0
    for _, g in changes:
        running += g
        peak = max(peak, running)
    return peak


def test_multi_tenant_queues_borrow_idle_quota_up_to_their_borrowing_limit():
    sc = shipped_scenario("multi-tenant")
    result = Simulation(sc, "phalanx").run()
    assert all(j.end is not None for j in result.jobs)
    for q in sc.queues:
        if q.parent is None:
            continue
        gpu = q.quota["devices/gpu"]
        assert isinstance(gpu.nominal, int) and isinstance(gpu.borrowing_limit, int)
        assert gpu.nominal < peak_gpus(result, q.name) <= gpu.nominal + gpu.borrowing_limit


def cycle_scenario(interval: float, submits: list[float]) -> Scenario:
    jobs = ", ".join(
        f"{{name: j{i}, submit: {t}, pods: 1, gpusPerPod: 1, duration: 1000}}"
        for i, t in enumerate(submits)
    )
    text = (
        f"name: c\ncycleInterval: {interval}\ncluster: [{{name: n, count: 1, gpus: 8}}]\n"
        f"workload: {{jobs: [{jobs}]}}\n"
    )
    return parse_scenario(text, "c.yaml")


def test_everything_that_happens_at_one_instant_is_decided_in_one_cycle():
    result = Simulation(cycle_scenario(0, [0, 0, 0, 0, 5, 5]), "phalanx").run()
    assert result.cycles == 4  # arrivals at 0 and 5, ends at 1000 and 1005
    assert [j.start for j in result.jobs] == [0, 0, 0, 0, 5, 5]


def test_cycles_are_at_least_cycle_interval_apart():
    result = Simulation(cycle_scenario(60, [0, 10, 20, 130]), "phalanx").run()
    assert [j.start for j in result.jobs] == [0, 60, 60, 130]


def test_simulate_out_writes_a_self_contained_report(tmp_path):
    out = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 3
    assert (tmp_path / "jobs.csv").exists() and (tmp_path / "summary.json").exists()
