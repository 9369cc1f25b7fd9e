"""Jobs that can never fit: warned about at load, reported, and no run waits for them forever."""

from __future__ import annotations

import pytest

from simulations.metrics import job_rows, summarize
from simulations.run import Simulation, never_fit_warnings
from simulations.scenario import Scenario, parse_scenario

SCHEDULERS = ["phalanx", "per-pod", "gang-timeout"]


def scenario(jobs: str, extra: str = "") -> Scenario:
    """Two nodes of 8 GPUs and 8 cpus."""
    text = (
        f"name: n\n{extra}"
        "cluster: [{name: gpu, count: 2, cpu: '8', memory: 64Gi, gpus: 8}]\n"
        f"workload: {{jobs: {jobs}}}\n"
    )
    return parse_scenario(text, "n.yaml")


WITH_A_HUGE_JOB = (
    "[{name: small, pods: 2, gpusPerPod: 4, duration: 100},"
    " {name: huge, pods: 3, gpusPerPod: 8, duration: 100}]"
)


@pytest.mark.parametrize("horizon", ["", "horizon: 100000\n"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_run_with_a_job_that_can_never_fit_ends_and_reports_it(scheduler, horizon):
    result = Simulation(scenario(WITH_A_HUGE_JOB, horizon), scheduler, check=True).run()
    assert result.violations == []
    summary = summarize(result)
    assert (summary["completed"], summary["never_fit"]) == (1, 1)
    states = {row["job"]: row["state"] for row in job_rows(result)}
    assert states == {"small": "done", "huge": "never-fit"}


def test_a_job_record_says_why_it_can_never_fit():
    result = Simulation(scenario(WITH_A_HUGE_JOB), "phalanx").run()
    huge = next(j for j in result.jobs if j.name == "huge")
    assert huge.never_fit == "can never fit: needs 24 devices/gpu; the cluster has 16"


def test_the_engine_keeps_a_never_fitting_gang_pending_with_its_reason():
    sim = Simulation(scenario(WITH_A_HUGE_JOB), "phalanx")
    sim.run()
    assert "huge" in sim.engine.state.pending
    assert sim.engine.reasons["huge"].startswith("can never fit: needs 24 devices/gpu")


def test_gang_timeout_gives_up_on_a_job_that_can_never_fit_after_one_attempt():
    result = Simulation(scenario(WITH_A_HUGE_JOB), "gang-timeout").run()
    huge = next(j for j in result.jobs if j.name == "huge")
    assert huge.attempts == 1 and huge.wasted_gpu_seconds > 0


def test_a_pod_larger_than_every_node_can_never_fit():
    jobs = "[{name: fat, pods: 1, gpusPerPod: 1, cpuPerPod: '16', duration: 100}]"
    result = Simulation(scenario(jobs), "per-pod").run()
    assert result.jobs[0].never_fit == (
        "can never fit: pod set worker: one pod needs cpu 16 but the largest node has 8"
    )


def test_a_job_beyond_its_queues_borrowing_limit_can_never_fit():
    queues = (
        "queues:\n  - {name: org}\n"
        "  - {name: a, parent: org, quota: {devices/gpu: {nominal: 4, borrowingLimit: 4}}}\n"
        "  - {name: b, parent: org, quota: {devices/gpu: {nominal: 12}}}\n"
    )
    sc = scenario("[{name: wide, pods: 2, gpusPerPod: 8, duration: 100, queue: a}]", queues)
    assert never_fit_warnings(Simulation(sc, "phalanx").never_fit) == [
        "warning: job wide can never fit: needs 16 devices/gpu; "
        "queue a may use at most 8 (nominal 4 + borrowing limit 4)"
    ]


def test_a_job_that_fits_only_by_borrowing_is_not_warned_about():
    queues = (
        "queues:\n  - {name: org}\n"
        "  - {name: a, parent: org, quota: {devices/gpu: {nominal: 4, borrowingLimit: 12}}}\n"
        "  - {name: b, parent: org, quota: {devices/gpu: {nominal: 12}}}\n"
    )
    sc = scenario("[{name: wide, pods: 2, gpusPerPod: 8, duration: 100, queue: a}]", queues)
    assert never_fit_warnings(Simulation(sc, "phalanx").never_fit) == []
    assert Simulation(sc, "phalanx").run().jobs[0].end == 100


def test_many_never_fitting_jobs_are_summarised_after_the_first_few():
    jobs = ", ".join(f"{{name: huge-{i}, pods: 3, gpusPerPod: 8, duration: 100}}" for i in range(7))
    lines = never_fit_warnings(Simulation(scenario(f"[{jobs}]"), "phalanx").never_fit)
    assert len(lines) == 6
    assert lines[-1] == "warning: and 2 more jobs that can never fit"


def test_random_failures_stop_once_only_never_fitting_jobs_are_left():
    extra = "horizon: 1000000\nfailures: [{mtbfHours: 0.01, repairSeconds: 10}]\n"
    jobs = (
        "[{name: quick, pods: 1, gpusPerPod: 1, duration: 1},"
        " {name: huge, pods: 3, gpusPerPod: 8, duration: 100}]"
    )
    result = Simulation(scenario(jobs, extra), "phalanx").run()
    assert result.jobs[0].end is not None
    assert result.node_failures < 10  # not one every 36 s until the horizon
