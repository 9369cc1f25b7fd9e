"""Shipped scenarios: per-pod placement deadlocks, all-or-nothing admission does not."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli import app
from simulations.metrics import summarize
from simulations.run import Simulation
from simulations.scenario import (
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


def test_every_shipped_scenario_runs_under_every_scheduler_it_names():
    for path in sorted(SCENARIOS.glob("*.yaml")):
        sc = load_scenario(path)
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
