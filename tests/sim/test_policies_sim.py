"""Policies in the simulator: chosen by name in the scenario, preemption and checkpoints."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from controller.cli import app
from policies import registry
from simulations.metrics import served_gpu_seconds, summarize
from simulations.run import RunResult, Simulation
from simulations.scenario import Scenario, ScenarioError, parse_scenario

LOW_THEN_HIGH = (
    "[{name: low, pods: 1, gpusPerPod: 8, duration: 1000, priority: 0},"
    " {name: high, submit: 100, pods: 1, gpusPerPod: 8, duration: 100, priority: 5}]"
)


def scenario(jobs: str = LOW_THEN_HIGH, extra: str = "", queues: str = "") -> Scenario:
    text = (
        f"name: p\ncycleInterval: 0\n{extra}"
        "cluster: [{name: gpu, count: 1, cpu: '8', gpus: 8}]\n"
        f"{queues}workload: {{jobs: {jobs}}}\n"
    )
    return parse_scenario(text, "p.yaml")


def run(sc: Scenario) -> RunResult:
    result = Simulation(sc, "phalanx", check=True).run()
    assert result.violations == []
    return result


def jobs(result: RunResult) -> dict[str, object]:
    return {j.name: j for j in result.jobs}


def test_without_preemption_the_high_priority_job_waits_for_the_node():
    high = jobs(run(scenario()))["high"]
    assert high.start == 1000


def test_priority_preemption_evicts_the_running_job_and_counts_it():
    result = run(scenario(extra="policies: {preemption: priority}\n"))
    by = jobs(result)
    assert (by["high"].start, by["low"].preemptions) == (100, 1)
    assert summarize(result)["preemptions"] == 1


def test_a_preempted_job_keeps_its_last_checkpoint_and_loses_the_rest():
    extra = "policies: {preemption: priority}\ncheckpointInterval: 60\n"
    low = jobs(run(scenario(extra=extra)))["low"]
    assert low.kept_gpu_seconds == 8 * 60
    assert low.lost_gpu_seconds == 8 * 40
    assert (low.start, low.end) == (200, 200 + 1000 - 60)


def test_without_checkpoints_a_preempted_job_starts_over():
    low = jobs(run(scenario(extra="policies: {preemption: priority}\n")))["low"]
    assert low.lost_gpu_seconds == 8 * 100
    assert low.end == 200 + 1000


def test_work_is_conserved_across_preemptions():
    extra = "policies: {preemption: priority}\ncheckpointInterval: 30\n"
    result = run(scenario(extra=extra))
    served = sum(served_gpu_seconds(j, result.end_time) for j in result.jobs)
    assert served == pytest.approx(sum(j.gpus * j.duration for j in result.jobs))


def test_min_runtime_protects_a_young_job_until_it_has_run_that_long():
    extra = "policies: {preemption: cost-aware}\nminRuntime: 500\n"
    by = jobs(run(scenario(extra=extra)))
    assert by["low"].preemptions == 1
    assert by["high"].start == 500


def test_min_runtime_longer_than_the_job_means_it_is_never_preempted():
    extra = "policies: {preemption: cost-aware}\nminRuntime: 5000\n"
    by = jobs(run(scenario(extra=extra)))
    assert by["low"].preemptions == 0
    assert by["high"].start == 1000


def test_a_queue_may_choose_its_own_preemption_policy():
    queues = (
        "queues: [{name: default, policies: {preemption: {name: priority, "
        "params: {scope: queue}}}}]\n"
    )
    by = jobs(run(scenario(queues=queues)))
    assert by["low"].preemptions == 1


def test_an_unknown_policy_name_is_an_error_naming_the_field_and_the_choices():
    with pytest.raises(ScenarioError) as err:
        scenario(extra="policies: {ordering: nope}\n")
    message = str(err.value)
    assert "p.yaml: policies.ordering" in message
    assert "available:" in message and "drf" in message


def test_a_bad_policy_parameter_in_a_queue_is_an_error_naming_the_queue():
    queues = "queues: [{name: default, policies: {ordering: {name: las, params: {bogus: 1}}}}]\n"
    with pytest.raises(ScenarioError, match=r"queues\[0\]\.policies\.ordering.*bogus"):
        scenario(queues=queues)


def test_runtime_estimates_are_exact_by_default_and_absent_when_unknown():
    exact = Simulation(scenario(), "phalanx")
    assert exact.jobs["low"].runtime_estimate == 1000
    unknown = Simulation(scenario(extra="estimates: {known: false}\n"), "phalanx")
    assert unknown.jobs["low"].runtime_estimate is None


def test_noisy_estimates_are_deterministic_and_leave_the_workload_alone():
    noisy = scenario(extra="estimates: {error: 0.5}\n")
    first, second = Simulation(noisy, "phalanx"), Simulation(noisy, "phalanx")
    assert first.jobs["low"].runtime_estimate == second.jobs["low"].runtime_estimate != 1000
    assert first.jobs["low"].duration == 1000


def test_sjf_runs_the_shorter_of_two_waiting_jobs_first():
    three = (
        "[{name: first, pods: 1, gpusPerPod: 8, duration: 100},"
        " {name: long, submit: 1, pods: 1, gpusPerPod: 8, duration: 1000},"
        " {name: short, submit: 2, pods: 1, gpusPerPod: 8, duration: 10}]"
    )
    by = jobs(run(scenario(three, extra="policies: {ordering: sjf}\n")))
    assert by["short"].start == 100 and by["long"].start == 110


class _Raises:
    """A preemption plug-in under test that fails whenever it is asked for victims."""

    name = "raises-in-victims"

    def could_help(self, state: object, gang: object) -> bool:
        return True

    def victims(self, ctx: object, gang: object, reason: str) -> list[str]:
        raise RuntimeError("off by one")


def test_a_faulty_policy_under_test_is_counted_and_quoted_in_the_result(monkeypatch):
    monkeypatch.setitem(registry._builtin["preemption"], _Raises.name, _Raises)
    result = run(scenario(extra=f"policies: {{preemption: {_Raises.name}}}\n"))
    assert result.policy_faults >= 1
    assert result.first_faults[0] == (
        "t=100: deciding gang high: preemption policy 'raises-in-victims' failed: "
        "victims raised RuntimeError: off by one"
    )
    assert jobs(result)["high"].start == 1000


def test_simulate_warns_of_policy_faults_under_each_scheduler(monkeypatch, tmp_path):
    monkeypatch.setitem(registry._builtin["preemption"], _Raises.name, _Raises)
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\ncycleInterval: 0\n"
        f"policies: {{preemption: {_Raises.name}}}\n"
        "cluster: [{name: gpu, count: 1, cpu: '8', gpus: 8}]\n"
        f"workload: {{jobs: {LOW_THEN_HIGH}}}\n"
    )
    out = CliRunner().invoke(app, ["simulate", str(path), "--scheduler", "phalanx"])
    assert out.exit_code == 0, out.output
    assert "policy faults under phalanx" in out.output
    assert "victims raised RuntimeError: off by one" in out.output
