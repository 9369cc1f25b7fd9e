"""`phalanx bench controller` at a tiny size: the table and JSON carry the figures and
targets (timings are the command's business, not a test's)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from controller.cli import app


def test_bench_controller_prints_a_table_and_writes_its_figures_as_json(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    size = ["--nodes", "2", "--gangs", "2", "--pods-per-gang", "2", "--unthrottled"]
    result = CliRunner().invoke(app, ["bench", "controller", *size, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "phalanx bench controller (gangjob)" in result.output
    written = json.loads(out.read_text())
    figures = written["figures"]
    assert (figures["gangs"], figures["pods"], figures["qps"]) == (2, 4, "unthrottled")
    assert (
        set(written["targets"])
        == set(written["met"])
        == {
            "pods_bound_per_s",
            "admission_p95_ms",
            "scheduling_writes_per_pod",
            "controller_peak_rss_mib",
        }
    )
    assert figures["requests_per_pod[POST pods/binding]"] >= 1
    for name in ("pods_bound_per_s", "admission_p95_ms", "controller_cpu_s"):
        assert figures[name] > 0, name


def test_bench_controller_in_foreign_mode_says_it_is_not_supported_yet() -> None:
    result = CliRunner().invoke(app, ["bench", "controller", "--mode", "foreign"])
    assert result.exit_code == 0, result.output
    assert "not supported yet" in result.output
    assert "pods_bound_per_s" not in result.output
