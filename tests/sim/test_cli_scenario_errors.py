"""A broken scenario or sweep file gets one line on the command line: file, field, value."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli import app
from tests.wide_cli import invoke

CLUSTER = "cluster:\n  - {{name: gpu, {group}}}\n"
GROUP = "count: 2, gpus: 8, "
JOBS = "workload:\n  jobs:\n    - {{name: j, pods: 1, gpusPerPod: 1, duration: 10, {job}}}\n"


def scenario_file(
    tmp_path: Path, group: str = GROUP + "cpu: '8'", job: str = "priority: 0"
) -> Path:
    """A scenario with one node group (`group`: its fields after the name) and one job."""
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\n" + CLUSTER.format(group=group) + JOBS.format(job=job))
    return path


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def group(fields: str) -> tuple[str, str]:
    return GROUP + fields, "priority: 0"


def job(fields: str) -> tuple[str, str]:
    return GROUP + "cpu: '8'", fields


@pytest.mark.parametrize(
    ("case", "field", "message"),
    [
        (group('cpu: "1.5.3Gi"'), "cluster[0].cpu", "'1.5.3Gi' is not a Kubernetes quantity"),
        (group('cpu: "-1"'), "cluster[0].cpu", "must not be negative (got '-1')"),
        (group("memory: -64Gi"), "cluster[0].memory", "must not be negative (got '-64Gi')"),
        (group("cpu: .nan"), "cluster[0].cpu", "nan is not a Kubernetes quantity"),
        (group("gpuMemory: .inf"), "cluster[0].gpuMemory", "inf is not a Kubernetes quantity"),
        (group('cpu: "1e400"'), "cluster[0].cpu", "'1e400' is too large"),
        (group("cpu: true"), "cluster[0].cpu", "(got True)"),
        (group("count: 1.5"), "cluster[0].count", "must be an integer (got 1.5)"),
        (group("pods: '110'"), "cluster[0].pods", "must be an integer (got '110')"),
        (group("gpuz: 2"), "cluster[0].gpuz", "unknown field"),
        (job("duration: .nan"), "workload.jobs[0].duration", "must be a finite number (got NaN)"),
        (job("submit: -5"), "workload.jobs[0].submit", "must be >= 0 (got -5)"),
        (job("priority: 4294967296"), "workload.jobs[0].priority", "(got 4294967296)"),
        (job("cpuPerPod: 2x"), "workload.jobs[0].cpuPerPod", "'2x' is not a Kubernetes quantity"),
        (job("queue: nope"), "workload.jobs[0].queue", "queue 'nope' is not defined"),
    ],
)
def test_a_malformed_field_is_one_line_naming_file_field_and_value(tmp_path, case, field, message):
    path = scenario_file(tmp_path, *case)
    out = CliRunner().invoke(app, ["simulate", str(path)])
    assert out.exit_code == 2
    line = one_line(out.output)
    assert line.startswith(f"{path}: {field}: ") and message in line


@pytest.mark.parametrize(
    ("fields", "field", "bound"),
    [
        ("count: 2, gpus: 100000000", "cluster[0].gpus", "must be <= 128 (got 100000000)"),
        ("count: 10000000", "cluster[0].count", "must be <= 50000 (got 10000000)"),
        ("count: 40000, gpus: 100", "cluster", "4000000 GPUs in all, over the bound 200000"),
    ],
)
def test_a_cluster_too_large_is_refused_naming_the_bound(tmp_path, fields, field, bound):
    path = scenario_file(tmp_path, group=fields)
    out = CliRunner().invoke(app, ["simulate", str(path)])
    assert out.exit_code == 2
    assert one_line(out.output) == f"{path}: {field}: {bound}"


def simulate(tmp_path: Path, text: str):
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path, CliRunner().invoke(app, ["simulate", str(path)])


def test_a_synthetic_size_without_an_upper_bound_is_refused(tmp_path):
    path, out = simulate(
        tmp_path,
        "name: t\ncluster: [{name: gpu, count: 1, gpus: 8}]\n"
        "workload:\n  synthetic:\n    jobs: 10\n    arrivalRate: 1\n"
        "    gpus: {pareto: {scale: 1, shape: 1.5}}\n    duration: 60\n",
    )
    assert out.exit_code == 2
    assert one_line(out.output) == (
        f"{path}: workload.synthetic.gpus: draws can reach inf, over the bound 65536: set max"
    )


def test_a_queue_cycle_is_one_line_per_queue_not_a_traceback(tmp_path):
    path, out = simulate(
        tmp_path,
        "name: c\ncluster: [{name: gpu, count: 1}]\n"
        "queues: [{name: a, parent: b}, {name: b, parent: a}, {name: default}]\n"
        "workload: {jobs: [{name: j, pods: 1, duration: 1}]}\n",
    )
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert out.output.splitlines() == [
        f"{path}: queues[0].parent: queue parents form a cycle: a -> b -> a",
        f"{path}: queues[1].parent: queue parents form a cycle: b -> a -> b",
    ]


def test_a_bad_value_in_a_sweep_grid_is_one_line_naming_the_sweep_file(tmp_path):
    scenario = scenario_file(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"scenario: {scenario}\nparameters:\n  cluster.0.cpu: ['1.5.3Gi']\n")
    out = CliRunner().invoke(app, ["sweep", str(sweep), "--workers", "1"])
    assert out.exit_code == 2
    assert one_line(out.output) == (
        f'{sweep}: sweep point cluster.0.cpu="1.5.3Gi": cluster[0].cpu: '
        "'1.5.3Gi' is not a Kubernetes quantity (e.g. 500m, 2, 16Gi, 1e3)"
    )


def test_a_sweep_with_too_many_runs_is_refused_before_anything_is_built(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"scenario: {scenario_file(tmp_path)}\nseeds: 100000000\n")
    out = CliRunner().invoke(app, ["sweep", str(sweep), "--workers", "1"])
    assert out.exit_code == 2
    assert one_line(out.output) == f"{sweep}: the sweep has 100000000 runs, over the bound 100000"


def test_simulate_warns_about_a_job_that_can_never_fit_and_counts_it(tmp_path):
    path = scenario_file(tmp_path, job="pods: 3, gpusPerPod: 8")
    path.write_text(path.read_text().replace("pods: 1, gpusPerPod: 1, ", ""))
    out = invoke(["simulate", str(path)], columns=200)
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0] == (
        "warning: job j can never fit: needs 24 devices/gpu; the cluster has 16"
    )
    assert "phalanx: 1 jobs can never fit" in out.output
