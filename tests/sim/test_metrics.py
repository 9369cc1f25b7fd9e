"""Metric definitions on small hand-made runs: percentiles, fairness, per-job rows, series."""

from __future__ import annotations

import random

import numpy as np
import pytest

from simulations.metrics import (
    fairness,
    jain_index,
    job_rows,
    percentile,
    queue_length_series,
    queue_service,
    queue_slowdown,
    slowdown_fairness,
    summarize,
    time_edges,
    utilisation_series,
)
from simulations.run import JobRecord, RunResult


def job(
    name="j",
    *,
    queue="default",
    pods=1,
    gpus=1,
    duration=10.0,
    submit=0.0,
    start=None,
    end=None,
    placed=0,
    first_placed_at=None,
):
    return JobRecord(
        name,
        queue,
        pods,
        gpus,
        duration,
        submit,
        start,
        end,
        placed,
        attempts=1,
        first_placed_at=first_placed_at,
    )


def done(name, submit, start, end, gpus=1, queue="default"):
    return job(
        name,
        queue=queue,
        gpus=gpus,
        duration=end - start,
        submit=submit,
        start=start,
        end=end,
        placed=1,
    )


def run(jobs, *, total_gpus=8, end_time=20.0, scheduler="phalanx"):
    return RunResult("hand-made", scheduler, jobs, total_gpus, end_time, events=0)


# ---- percentiles and JCT ---------------------------------------------------------------------


@pytest.mark.parametrize(("q", "expected"), [(0.0, 1), (0.5, 2), (0.75, 3), (1.0, 4)])
def test_percentile_is_nearest_rank_and_always_an_observed_value(q, expected):
    assert percentile([4.0, 1.0, 3.0, 2.0], q) == expected


def test_jct_percentiles_are_taken_over_completed_jobs():
    jobs = [done(f"j{i}", 0.0, 0.0, float(i)) for i in range(1, 101)]
    jobs.append(job("never", submit=0.0))
    row = summarize(run(jobs, end_time=200.0))
    assert (row["jct_p50_s"], row["jct_p95_s"], row["jct_p99_s"]) == (50.0, 95.0, 99.0)
    assert row["jct_mean_s"] == 50.5


def test_jct_counts_from_submission_not_from_start():
    row = summarize(run([done("a", submit=2.0, start=5.0, end=9.0)]))
    assert row["jct_mean_s"] == 7.0 and row["wait_mean_s"] == 3.0


def test_queueing_delay_covers_started_jobs_only():
    jobs = [done("a", 0.0, 4.0, 6.0), done("b", 0.0, 8.0, 9.0), job("c", submit=0.0)]
    row = summarize(run(jobs))
    assert row["wait_mean_s"] == 6.0 and row["wait_p95_s"] == 8.0


def test_no_completed_job_gives_no_jct():
    row = summarize(run([job("a")]))
    assert row["jct_mean_s"] is None and row["jct_p99_s"] is None


def test_makespan_is_the_last_completion_when_every_job_completed():
    assert summarize(run([done("a", 0, 0, 5), done("b", 0, 1, 7)]))["makespan_s"] == 7


def test_makespan_is_none_while_any_job_is_unfinished():
    assert summarize(run([done("a", 0, 0, 5), job("b")]))["makespan_s"] is None


def test_utilisation_is_gpu_seconds_run_over_capacity_times_run_length():
    jobs = [done("a", 0, 0, 10, gpus=4), job("b", gpus=2, start=15.0, submit=0.0)]
    # a: 4 x 10, b still running at the end: 2 x 5; capacity 8 x 20.
    assert summarize(run(jobs))["gpu_utilisation"] == round(50 / 160, 4)


def test_summary_keeps_the_figures_the_cli_prints():
    row = summarize(run([done("a", 0, 0, 5)]))
    for key in (
        "scenario",
        "scheduler",
        "jobs",
        "completed",
        "stuck",
        "deadlock_at_s",
        "jct_mean_s",
        "jct_p95_s",
        "wait_mean_s",
        "makespan_s",
        "gpu_utilisation",
        "idle_held_gpu_h",
        "wasted_gpu_h",
        "events",
    ):
        assert key in row


def test_restarts_and_lost_work_are_zero_when_the_simulator_does_not_record_them():
    row = summarize(run([done("a", 0, 0, 5)]))
    assert row["restarts"] == 0 and row["lost_gpu_h"] == 0.0


def test_restarts_and_lost_work_are_summed_when_recorded():
    a, b = done("a", 0, 0, 5), done("b", 0, 0, 5)
    vars(a).update(restarts=2, lost_gpu_seconds=3600.0)
    vars(b).update(restarts=1, lost_gpu_seconds=1800.0)
    row = summarize(run([a, b]))
    assert row["restarts"] == 3 and row["lost_gpu_h"] == 1.5


# ---- fairness --------------------------------------------------------------------------------


def test_jain_index_is_one_for_equal_shares():
    assert jain_index([0.3, 0.3, 0.3]) == pytest.approx(1.0)


def test_jain_index_is_one_over_n_when_one_takes_all():
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_jain_index_of_nothing_served_is_undefined():
    assert jain_index([0.0, 0.0]) is None and jain_index([]) is None


def test_fairness_is_one_over_n_when_one_queue_is_served_and_the_rest_starve():
    jobs = [done("a", 0, 0, 10, queue="a")] + [job(q, queue=q) for q in ("b", "c", "d")]
    assert summarize(run(jobs))["fairness_jain"] == 0.25


def test_fairness_compares_shares_of_demand_not_gpu_time():
    # Queue a asked for 8 x 10 and got half; queue b asked for 1 x 10 and got half too.
    jobs = [
        job("a", queue="a", gpus=8, duration=10.0, start=15.0),
        job("b", queue="b", gpus=1, duration=10.0, start=15.0),
    ]
    result = run(jobs)
    assert queue_service(result) == {"a": 0.5, "b": 0.5}
    assert fairness(result) == pytest.approx(1.0)


def test_fairness_ignores_jobs_submitted_after_the_run_stopped():
    jobs = [done("a", 0, 0, 10, queue="a"), job("late", queue="b", submit=30.0)]
    assert queue_service(run(jobs)) == {"a": 1.0}


def test_queue_slowdown_is_gpu_weighted_completion_time_over_run_time():
    jobs = [done("small", 0, 10, 20, gpus=1), done("big", 0, 0, 10, gpus=3)]
    assert queue_slowdown(run(jobs)) == {"default": (1 * 20 + 3 * 10) / (1 * 10 + 3 * 10)}


def test_an_unfinished_job_slows_its_queue_down_until_the_end_of_the_run():
    assert queue_slowdown(run([job("a", duration=5.0)], end_time=20.0)) == {"default": 4.0}


def test_slowdown_fairness_is_one_when_every_queue_waits_alike():
    jobs = [done("a", 0, 10, 20, queue="a"), done("b", 5, 15, 25, queue="b")]
    assert slowdown_fairness(run(jobs, end_time=30.0)) == pytest.approx(1.0)


def test_slowdown_fairness_falls_when_one_queue_waits_longer():
    # a runs at once (slowdown 1), b waits twice its run time (slowdown 3).
    jobs = [done("a", 0, 0, 10, queue="a"), done("b", 0, 20, 30, queue="b")]
    assert slowdown_fairness(run(jobs, end_time=30.0)) == pytest.approx(0.8)


# ---- per-job rows ----------------------------------------------------------------------------


def test_job_row_gives_wait_and_jct_from_submission():
    (row,) = job_rows(run([done("a", submit=2.0, start=5.0, end=9.0)]))
    assert row["state"] == "done"
    assert (row["submit_s"], row["start_s"], row["end_s"]) == (2.0, 5.0, 9.0)
    assert (row["wait_s"], row["jct_s"]) == (3.0, 7.0)


def test_job_row_of_a_partial_gang_has_no_start_and_says_partial():
    stuck = job("a", pods=4, gpus=8, placed=3, first_placed_at=1.0)
    (row,) = job_rows(run([stuck], scheduler="per-pod"))
    assert row["state"] == "partial" and row["start_s"] is None and row["jct_s"] is None
    assert (row["pods"], row["gpus"], row["restarts"], row["lost_gpu_s"]) == (4, 8, 0, 0.0)


def test_job_row_rounds_times_to_the_millisecond():
    (row,) = job_rows(run([done("a", 0.0, 0.1 + 0.2, 1.0)]))
    assert row["start_s"] == 0.3


# ---- series ----------------------------------------------------------------------------------


def test_bins_start_at_zero_and_the_last_is_cut_at_the_end_of_the_run():
    assert time_edges(12.0, 5.0).tolist() == [0.0, 5.0, 10.0, 12.0]


def test_a_bin_width_must_be_positive():
    with pytest.raises(ValueError, match="step"):
        time_edges(10.0, 0.0)


def test_busy_series_is_the_mean_gpus_running_per_bin():
    jobs = [done("a", 0, 0, 10, gpus=4), done("b", 0, 5, 15, gpus=2)]
    busy = utilisation_series(run(jobs), 5.0).busy
    assert busy.values.tolist() == [4.0, 6.0, 2.0, 0.0]


def test_busy_series_averages_a_job_over_the_part_of_a_bin_it_ran():
    busy = utilisation_series(run([done("a", 0, 2.5, 7.5, gpus=4)], end_time=10.0), 5.0).busy
    assert busy.values.tolist() == [2.0, 2.0]


def test_runs_cut_short_by_preemption_or_failure_count_as_busy():
    preempted = done("a", 0, 10, 20, gpus=2)
    preempted.interrupted.append((0.0, 5.0))
    busy = utilisation_series(run([preempted]), 5.0).busy
    assert busy.values.tolist() == [2.0, 0.0, 2.0, 2.0]


def test_a_job_still_running_counts_until_the_end_of_the_run():
    busy = utilisation_series(run([job("a", gpus=2, start=10.0)]), 5.0).busy
    assert busy.values.tolist() == [0.0, 0.0, 2.0, 2.0]


def test_a_partial_gang_holds_its_placed_pods_gpus_until_the_end():
    stuck = job("a", pods=4, gpus=8, placed=3, first_placed_at=5.0)
    idle = utilisation_series(run([stuck], scheduler="per-pod"), 5.0).held_idle
    assert idle.values.tolist() == [0.0, 6.0, 6.0, 6.0]


def test_a_started_gang_held_all_but_its_last_pod_before_starting():
    late = job("a", pods=4, gpus=8, placed=4, first_placed_at=0.0, start=10.0, end=15.0)
    u = utilisation_series(run([late], scheduler="per-pod"), 5.0)
    assert u.held_idle.values.tolist() == [6.0, 6.0, 0.0, 0.0]
    assert u.busy.values.tolist() == [0.0, 0.0, 8.0, 0.0]


def test_held_idle_never_exceeds_the_gpus_not_running_jobs():
    jobs = [
        done("small", 0, 0, 10, gpus=4),
        job("big", pods=4, gpus=8, placed=4, first_placed_at=0.0, start=10.0, end=20.0),
    ]
    u = utilisation_series(run(jobs, total_gpus=8, scheduler="per-pod"), 5.0)
    assert (u.busy.values + u.held_idle.values).max() <= 8.0


def test_series_area_equals_the_gpu_seconds_served():
    jobs = [done("a", 0, 0.3, 7.9, gpus=3), done("b", 0, 4.1, 18.2, gpus=5)]
    busy = utilisation_series(run(jobs), 3.0).busy
    assert float(np.sum(busy.values * np.diff(busy.edges))) == pytest.approx(3 * 7.6 + 5 * 14.1)


def test_queue_length_counts_jobs_submitted_and_not_yet_started():
    jobs = [done("a", submit=0.0, start=10.0, end=12.0), job("b", submit=5.0)]
    assert queue_length_series(run(jobs), 5.0).values.tolist() == [1.0, 2.0, 1.0, 1.0]


def test_queue_length_area_equals_the_waiting_seconds_of_80000_jobs():
    """The vectorised binning stays exact at trace scale (its speed is `bench sim`'s job)."""
    rng = random.Random(3)
    jobs = []
    for i in range(80_000):
        submit = rng.uniform(0, 1e6)
        start = submit + rng.uniform(0, 1e4) if i % 10 else None
        jobs.append(job(f"j{i}", submit=submit, start=start, end=None))
    end = 1.2e6
    series = queue_length_series(run(jobs, end_time=end), 600.0)
    waited = sum(min(end if j.start is None else j.start, end) - j.submit for j in jobs)
    area = float(np.sum(series.values * np.diff(series.edges)))
    assert area == pytest.approx(waited, rel=1e-9)


def test_fragmentation_is_the_share_of_free_gpus_on_partly_used_nodes():
    from simulations.run import Simulation
    from simulations.scenario import parse_scenario

    sc = parse_scenario(
        "name: frag\nhorizon: 100\nschedulers: [phalanx]\n"
        "cluster: [{name: n, count: 2, gpus: 8}]\n"
        "workload: {jobs: [{name: j, pods: 1, gpusPerPod: 4, duration: 1000}]}\n",
        "frag.yaml",
    )
    result = Simulation(sc, "phalanx").run()
    assert result.fragmentation == pytest.approx(1 - 8 / 12)
