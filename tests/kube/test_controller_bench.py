"""`phalanx bench controller` at a tiny size: the table and JSON carry the figures and
targets of each mode (timings are the command's business, not a test's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from controller.cli import app

TINY = ["--nodes", "2", "--gangs", "2", "--pods-per-gang", "2", "--unthrottled"]
PER_POD = {
    "pods_bound_per_s",
    "admission_p95_ms",
    "scheduling_writes_per_pod",
    "controller_peak_rss_mib",
}


def bench(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(app, ["bench", "controller", *args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


def test_bench_controller_prints_a_table_and_writes_its_figures_as_json(tmp_path: Path) -> None:
    output, written = bench(tmp_path, *TINY)
    assert "phalanx bench controller (gangjob)" in output
    figures = written["figures"]
    assert (figures["gangs"], figures["pods"], figures["qps"]) == (2, 4, "unthrottled")
    assert set(written["targets"]) == set(written["met"]) == PER_POD
    assert written["targets"]["scheduling_writes_per_pod"] == 2.2
    assert figures["requests_per_pod[POST pods/binding]"] >= 1
    assert figures["requests_per_pod[POST pods]"] == 1
    for name in ("pods_bound_per_s", "admission_p95_ms", "controller_cpu_s", "emulator_cpu_s"):
        assert figures[name] > 0, name


def test_bench_controller_times_gangs_from_their_last_pod_and_also_from_submission(
    tmp_path: Path,
) -> None:
    _, written = bench(tmp_path, *TINY)
    figures = written["figures"]
    # each gang's pods are created after its GangJob is submitted
    assert figures["admission_from_submission_p50_ms"] >= figures["admission_p50_ms"] > 0
    assert figures["admission_from_submission_p95_ms"] >= figures["admission_p95_ms"] > 0


def test_bench_controller_profiles_both_processes_over_the_measured_span(tmp_path: Path) -> None:
    bench(tmp_path, *TINY, "--profile", str(tmp_path / "profile"))
    written = sorted(p.name for p in (tmp_path / "profile").iterdir())
    assert written == ["controller-flat.txt", "controller.txt", "emulator-flat.txt", "emulator.txt"]
    assert "CPU time:" in (tmp_path / "profile" / "controller.txt").read_text()


def test_bench_controller_in_foreign_mode_protects_allocates_and_binds_the_users_claims(
    tmp_path: Path,
) -> None:
    output, written = bench(tmp_path, "--mode", "foreign", *TINY)
    assert "phalanx bench controller (foreign)" in output
    figures = written["figures"]
    assert (figures["mode"], figures["pods"]) == ("foreign", 4)
    assert set(written["targets"]) == PER_POD
    assert written["targets"]["scheduling_writes_per_pod"] == 3.2
    assert "requests_per_pod[POST pods]" not in figures
    assert "requests_per_pod[POST resourceclaims]" not in figures
    assert "admission_from_submission_p95_ms" not in figures  # the bench makes the pods
    assert figures["requests_per_pod[PATCH resourceclaims]"] == 1  # the finalizer
    assert figures["requests_per_pod[PATCH resourceclaims/status]"] >= 1
    assert figures["requests_per_pod[POST configmaps]"] == 0.5  # one record per gang of 2
    assert figures["scheduling_writes_per_pod"] == figures["writes_per_pod"]


def test_bench_controller_cold_start_times_the_first_cycle_over_pending_gang_jobs(
    tmp_path: Path,
) -> None:
    size = ["--nodes", "2", "--gangs", "4", "--pods-per-gang", "2", "--unthrottled"]
    output, written = bench(tmp_path, "--cold-start", *size)
    assert "cold start" in output
    figures = written["figures"]
    assert (figures["nodes"], figures["pending_gangs"]) == (2, 4)
    assert 0 < figures["caches_synced_s"] <= figures["first_cycle_decided_s"]
    assert figures["first_cycle_decided_s"] <= figures["first_cycle_done_s"]
    assert figures["admitted_in_first_cycle"] == 4  # 8 one-GPU pods on 16 GPUs
    assert figures["requests[PATCH gangjobs/status]"] >= 4
    assert (
        set(written["targets"])
        == set(written["met"])
        == {
            "first_cycle_done_s",
            "controller_peak_rss_mib",
        }
    )


def test_bench_controller_cold_start_is_for_gang_jobs_only() -> None:
    result = CliRunner().invoke(app, ["bench", "controller", "--cold-start", "--mode", "foreign"])
    assert result.exit_code == 2
    assert "--mode gangjob" in result.output


def test_bench_controller_reports_the_drivers_own_pace_and_cpu(tmp_path: Path) -> None:
    _, written = bench(tmp_path, "--mode", "foreign", *TINY)
    figures = written["figures"]
    assert 0 < figures["driver_submitting_s"] <= figures["pods"] / figures["pods_bound_per_s"]
    assert figures["driver_cpu_s"] > 0
