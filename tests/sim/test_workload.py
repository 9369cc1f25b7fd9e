"""Workloads: generated from distributions with one seeded RNG, or replayed from a CSV trace."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from simulations.run import Simulation
from simulations.scenario import ScenarioError, load_scenario, parse_scenario, shipped_scenario
from simulations.workload import jobs_of, split_gpus

CLUSTER = "cluster: [{name: gpu, count: 4, gpus: 8}]\n"
QUEUES = "queues: [{name: default}, {name: team-a}, {name: team-b}]\n"


def synthetic(body: str, seed: int = 1) -> list:
    text = f"name: s\nseed: {seed}\n{CLUSTER}{QUEUES}workload:\n  synthetic: {body}\n"
    return jobs_of(parse_scenario(text, "s.yaml"))


BASIC = "{jobs: 2000, arrivalRate: 0.5, gpus: {choices: {1: 3, 8: 1}}, duration: 600}"


# ---- synthetic -------------------------------------------------------------------------
def test_same_seed_gives_identical_jobs():
    assert synthetic(BASIC, seed=3) == synthetic(BASIC, seed=3)


def test_another_seed_gives_other_jobs():
    assert synthetic(BASIC, seed=3) != synthetic(BASIC, seed=4)


def test_jobs_are_numbered_with_unique_names():
    jobs = synthetic(BASIC)
    assert len(jobs) == 2000
    assert jobs[0].name == "job-0000" and jobs[-1].name == "job-1999"


def test_arrivals_are_poisson_at_the_given_rate():
    submits = [j.submit for j in synthetic(BASIC)]
    gaps = [b - a for a, b in zip([0.0, *submits], submits, strict=False)]
    assert all(g > 0 for g in gaps)
    assert statistics.fmean(gaps) == pytest.approx(2.0, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(2.0, rel=0.1)  # exponential: sd = mean


def test_arrivals_begin_after_start():
    jobs = synthetic("{jobs: 10, arrivalRate: 1, start: 500, gpus: 1, duration: 5}")
    assert min(j.submit for j in jobs) > 500


def test_choices_are_drawn_in_proportion_to_their_weights():
    gpus = [j.pods * j.gpus_per_pod for j in synthetic(BASIC)]
    assert set(gpus) == {1, 8}
    assert gpus.count(1) / len(gpus) == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize(
    ("gpus", "per_pod_max", "split"),
    [
        (1, 8, (1, 1)),
        (8, 8, (1, 8)),
        (12, 8, (2, 6)),
        (9, 8, (3, 3)),
        (64, 8, (8, 8)),
        (0, 8, (1, 0)),
    ],
)
def test_a_job_of_g_gpus_gets_the_fewest_pods_that_split_it_exactly(gpus, per_pod_max, split):
    assert split_gpus(gpus, per_pod_max) == split


def test_gpus_per_job_are_split_into_pods_of_at_most_gpus_per_pod_max():
    jobs = synthetic(
        "{jobs: 300, arrivalRate: 1, gpusPerPodMax: 4, gpus: {choices: {2: 1, 16: 1}}, duration: 5}"
    )
    assert {(j.pods, j.gpus_per_pod) for j in jobs} == {(1, 2), (4, 4)}


def test_pods_and_gpus_per_pod_can_be_drawn_separately():
    jobs = synthetic(
        "{jobs: 200, arrivalRate: 1, pods: {choices: {1: 1, 4: 1}}, gpusPerPod: 2, duration: 5}"
    )
    assert {j.pods for j in jobs} == {1, 4} and {j.gpus_per_pod for j in jobs} == {2}


def test_lognormal_durations_have_the_given_median_and_are_clamped():
    jobs = synthetic(
        "{jobs: 4000, arrivalRate: 1, gpus: 1, "
        "duration: {lognormal: {median: 600, sigma: 2}, min: 60, max: 7200}}"
    )
    durations = [j.duration for j in jobs]
    assert statistics.median(durations) == pytest.approx(600, rel=0.1)
    assert min(durations) == 60 and max(durations) == 7200


def test_a_mixture_draws_each_component_by_weight():
    jobs = synthetic(
        "{jobs: 2000, arrivalRate: 1, gpus: 1, duration: {mixture: ["
        "{weight: 9, uniform: {low: 10, high: 20}}, {weight: 1, pareto: {scale: 1000, shape: 1.5}}"
        "]}}"
    )
    long = [j.duration for j in jobs if j.duration >= 1000]
    assert len(long) / len(jobs) == pytest.approx(0.1, abs=0.02)
    assert all(10 <= j.duration <= 20 for j in jobs if j.duration < 1000)


def test_priorities_are_drawn_and_rounded_to_integers():
    jobs = synthetic(
        "{jobs: 500, arrivalRate: 1, gpus: 1, duration: 5, "
        "priority: {uniform: {low: -0.4, high: 2.4}}}"
    )
    assert {j.priority for j in jobs} == {0, 1, 2}


def test_jobs_go_to_queues_in_proportion_to_their_weights():
    jobs = synthetic(
        "{jobs: 2000, arrivalRate: 1, gpus: 1, duration: 5, queues: {team-a: 3, team-b: 1}}"
    )
    share = sum(1 for j in jobs if j.queue == "team-a") / len(jobs)
    assert share == pytest.approx(0.75, abs=0.03)


def test_generation_draws_only_from_the_rng_it_is_given():
    text = f"name: s\nseed: 5\n{CLUSTER}workload:\n  synthetic: {BASIC}\n"
    sc = parse_scenario(text, "s.yaml")
    random.seed(0)
    first = jobs_of(sc, random.Random(99))
    random.seed(1)
    assert jobs_of(sc, random.Random(99)) == first != jobs_of(sc)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "{jobs: 3, arrivalRate: 1, gpus: 1, pods: 2, duration: 5}",
            "workload.synthetic.pods: give either gpus, or pods and gpusPerPod",
        ),
        (
            "{jobs: 3, arrivalRate: 1, duration: 5}",
            "workload.synthetic: give the job size",
        ),
        (
            "{jobs: 3, arrivalRate: 1, gpus: 1, duration: {value: 5, lognormal: {median: 1, "
            "sigma: 1}}}",
            "workload.synthetic.duration: give exactly one of value, choices",
        ),
        (
            "{jobs: 3, arrivalRate: 1, gpus: 1, duration: {uniform: {low: 0, high: 5}}}",
            "workload.synthetic.duration: draws must be > 0 seconds",
        ),
        (
            "{jobs: 3, arrivalRate: 0, gpus: 1, duration: 5}",
            "workload.synthetic.arrivalRate: must be > 0",
        ),
        (
            "{jobs: 3, arrivalRate: 1, gpus: 1, duration: 5, queues: {nope: 1}}",
            "workload.synthetic.queues.nope: queue 'nope' is not defined",
        ),
        (
            "{jobs: 3, arrivalRate: 1, gpus: {value: 2, min: 4, max: 1}, duration: 5}",
            "workload.synthetic.gpus.max: must be >= min",
        ),
    ],
)
def test_a_broken_synthetic_workload_names_the_field_at_fault(body, message):
    with pytest.raises(ScenarioError, match=r"^s\.yaml: ") as err:
        synthetic(body)
    assert message in str(err.value)


def test_a_workload_takes_exactly_one_of_jobs_synthetic_and_trace():
    text = (
        f"name: s\n{CLUSTER}workload:\n  jobs: [{{name: a, pods: 1, duration: 5}}]\n"
        f"  synthetic: {BASIC}\n"
    )
    with pytest.raises(ScenarioError, match="workload: give exactly one of jobs, synthetic or"):
        parse_scenario(text, "s.yaml")


def test_philly_like_is_shaped_like_a_production_gpu_trace():
    sc = shipped_scenario("philly-like")
    jobs = jobs_of(sc)
    gpus = [j.pods * j.gpus_per_pod for j in jobs]
    assert len(jobs) == 80_000
    assert sum(g.count * g.gpus for g in sc.cluster) >= 2_500
    assert gpus.count(1) / len(gpus) == pytest.approx(0.93, abs=0.01)
    assert {g for g in gpus if g > 1} == {2, 4, 8, 16, 32, 64, 128}
    assert max(j.gpus_per_pod for j in jobs) == 8
    durations = sorted(j.duration for j in jobs)
    assert durations[0] == 60 and durations[-1] == 21 * 86400
    assert statistics.fmean(durations) > 10 * statistics.median(durations)  # heavy tail


# ---- traces ----------------------------------------------------------------------------
TRACE_SCENARIO = """\
name: t
cluster: [{{name: gpu, count: 4, gpus: 8}}]
queues: [{{name: default}}, {{name: vc-a}}, {{name: vc-b}}]
workload:
  trace:
    path: {path}
    columns: {columns}
{extra}"""
COLUMNS = "{submit: submitted, duration: runtime, gpus: num_gpus, tenant: vc}"
CSV = """\
job,submitted,runtime,num_gpus,vc
a,1000,60,1,vc-a
b,1030,120.5,16,vc-b
c,1030,30,12,vc-a
"""


def write_trace(
    tmp_path: Path, csv: str = CSV, columns: str = COLUMNS, extra: str = "", name: str = "t.yaml"
) -> Path:
    (tmp_path / "trace.csv").write_text(csv)
    scenario = tmp_path / name
    scenario.write_text(TRACE_SCENARIO.format(path="trace.csv", columns=columns, extra=extra))
    return scenario


def trace(tmp_path: Path, **kwargs: str) -> list:
    return jobs_of(load_scenario(write_trace(tmp_path, **kwargs)))


def test_a_trace_replays_one_job_per_row_with_times_shifted_to_zero(tmp_path):
    jobs = trace(tmp_path)
    assert [(j.submit, j.duration, j.queue) for j in jobs] == [
        (0, 60, "vc-a"),
        (30, 120.5, "vc-b"),
        (30, 30, "vc-a"),
    ]


def test_trace_jobs_are_split_into_pods_of_at_most_gpus_per_pod_max(tmp_path):
    jobs = trace(tmp_path, extra="    gpusPerPodMax: 4\n")
    assert [(j.pods, j.gpus_per_pod) for j in jobs] == [(1, 1), (4, 4), (3, 4)]


def test_a_pods_column_sets_the_split(tmp_path):
    csv = "t,d,g,p\n0,5,16,4\n"
    jobs = trace(tmp_path, csv=csv, columns="{submit: t, duration: d, gpus: g, pods: p}")
    assert [(j.pods, j.gpus_per_pod) for j in jobs] == [(4, 4)]


def test_a_gpus_per_pod_column_sets_the_split(tmp_path):
    csv = "t,d,g,n\n0,5,16,2\n"
    jobs = trace(tmp_path, csv=csv, columns="{submit: t, duration: d, gpus: g, gpusPerPod: n}")
    assert [(j.pods, j.gpus_per_pod) for j in jobs] == [(8, 2)]


def test_without_a_tenant_column_every_job_goes_to_the_configured_queue(tmp_path):
    columns = "{submit: submitted, duration: runtime, gpus: num_gpus}"
    jobs = trace(tmp_path, columns=columns, extra="    queue: vc-b\n")
    assert {j.queue for j in jobs} == {"vc-b"}


def test_tenants_can_be_mapped_to_queues(tmp_path):
    jobs = trace(tmp_path, extra="    tenantQueues: {vc-a: default}\n")
    assert [j.queue for j in jobs] == ["default", "vc-b", "default"]


def test_limit_keeps_the_first_rows(tmp_path):
    assert [j.duration for j in trace(tmp_path, extra="    limit: 2\n")] == [60, 120.5]


def test_times_may_be_in_other_units_or_iso_date_times(tmp_path):
    csv = "t,d,g\n2017-10-03 02:30:00,2,1\n2017-10-03T02:31:00,1.5,1\n"
    jobs = trace(
        tmp_path, csv=csv, columns="{submit: t, duration: d, gpus: g}", extra="    timeUnit: min\n"
    )
    assert [(j.submit, j.duration) for j in jobs] == [(0, 120), (60, 90)]


def test_a_name_column_names_the_jobs_otherwise_the_file_and_line_do(tmp_path):
    named = trace(
        tmp_path,
        columns="{submit: submitted, duration: runtime, gpus: num_gpus, tenant: vc, name: job}",
    )
    assert [j.name for j in named] == ["a", "b", "c"]
    assert [j.name for j in trace(tmp_path)] == ["trace-2", "trace-3", "trace-4"]


def test_the_trace_path_is_relative_to_the_scenario_file(tmp_path, monkeypatch):
    scenario = write_trace(tmp_path)
    monkeypatch.chdir(Path("/"))
    assert len(jobs_of(load_scenario(scenario))) == 3


def test_a_replayed_trace_runs_to_completion(tmp_path):
    result = Simulation(load_scenario(write_trace(tmp_path)), "phalanx", check=True).run()
    assert all(j.end is not None for j in result.jobs) and result.violations == []


def test_a_bad_row_names_the_file_line_and_column(tmp_path):
    csv = CSV + "d,1040,fast,1,vc-a\n"
    with pytest.raises(ScenarioError) as err:
        load_scenario(write_trace(tmp_path, csv=csv))
    assert str(err.value) == (
        f"{tmp_path / 'trace.csv'}: line 5: column 'runtime' (duration): must be a number "
        "(got 'fast')"
    )


def test_every_bad_row_is_reported_on_its_own_line(tmp_path):
    csv = CSV + "d,1040,0,1,vc-a\ne,1050,10,-2,vc-a\nf,1060,10,1,vc-z\n"
    with pytest.raises(ScenarioError) as err:
        load_scenario(write_trace(tmp_path, csv=csv))
    lines = str(err.value).splitlines()
    assert [line.split(": ", 2)[1:] for line in lines] == [
        ["line 5", "column 'runtime' (duration): must be > 0 (got '0')"],
        ["line 6", "column 'num_gpus' (gpus): must be a whole number >= 0 (got '-2')"],
        [
            "line 7",
            "column 'vc' (tenant): queue 'vc-z' is not defined in queues "
            "(map tenants to queues with tenantQueues)",
        ],
    ]


def test_a_missing_column_is_named_with_the_columns_the_header_has(tmp_path):
    columns = "{submit: submitted, duration: runtime, gpus: gpus}"
    with pytest.raises(ScenarioError, match=r"line 1: no column 'gpus' \(for columns.gpus\)"):
        load_scenario(write_trace(tmp_path, columns=columns))


def test_a_pods_column_that_does_not_divide_the_gpus_is_refused(tmp_path):
    csv = "t,d,g,p\n0,5,10,4\n"
    with pytest.raises(ScenarioError, match="line 2: column 'p' \\(pods\\): 10 GPUs do not split"):
        trace(tmp_path, csv=csv, columns="{submit: t, duration: d, gpus: g, pods: p}")


def test_a_missing_trace_file_names_the_scenario_field(tmp_path):
    scenario = write_trace(tmp_path)
    (tmp_path / "trace.csv").unlink()
    with pytest.raises(ScenarioError, match=r"t\.yaml: workload\.trace\.path: cannot read .*trace"):
        load_scenario(scenario)
