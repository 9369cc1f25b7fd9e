"""`phalanx sweep` on the command line: a table of means and intervals, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from controller.cli import app
from tests.wide_cli import invoke

SCENARIO = Path(__file__).parents[2] / "simulations" / "scenarios" / "minimal-deadlock.yaml"


def test_sweep_prints_one_row_per_scheduler_and_parameter_value(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        f"scenario: {SCENARIO}\nschedulers: [phalanx, per-pod]\nseeds: 2\n"
        "parameters:\n  cycleInterval: [1, 2]\n"
    )
    out_json = tmp_path / "runs.json"
    result = invoke(["sweep", str(spec), "--workers", "1", "--json", str(out_json)], columns=200)
    assert result.exit_code == 0, result.output
    assert "8 runs" in result.output
    assert len(json.loads(out_json.read_text())["table"]) == 4


def test_sweep_with_an_unknown_parameter_exits_with_the_reason(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"scenario: {SCENARIO}\nparameters:\n  cycleIntervl: [1]\n")
    result = CliRunner().invoke(app, ["sweep", str(spec)])
    assert result.exit_code == 2
    assert "cycleIntervl" in result.output and "Traceback" not in result.output


def variant_sweep(tmp_path: Path) -> Path:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        f"scenario: {SCENARIO}\nschedulers: [phalanx]\nseeds: 1\n"
        "parameters:\n  cycleInterval: [1]\n"
        "variants:\n  fifo: {}\n  drf: {policies.ordering: drf}\n"
    )
    return spec


def test_sweep_markdown_shows_only_the_axes_that_vary_and_the_chosen_metrics(tmp_path):
    md = tmp_path / "table.md"
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            str(variant_sweep(tmp_path)),
            "--workers",
            "1",
            "--metrics",
            "completed,preemptions",
            "--markdown",
            str(md),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = md.read_text().splitlines()
    assert lines[0] == "| variant | n | completed | preemptions |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| fifo", "| drf"]


def test_sweep_with_an_unknown_metric_lists_the_known_ones(tmp_path):
    result = CliRunner().invoke(
        app, ["sweep", str(variant_sweep(tmp_path)), "--workers", "1", "--metrics", "speed"]
    )
    assert result.exit_code == 2
    assert "unknown speed" in result.output and "jct_mean_s" in result.output


def test_sweep_reports_a_failed_run_after_the_table_and_exits_1(tmp_path, monkeypatch):
    import simulations.sweep as sweep

    def boom(scenario, scheduler):
        raise RuntimeError("engine broke")

    monkeypatch.setattr(sweep, "run_task", boom)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"scenario: {SCENARIO}\nschedulers: [phalanx]\n")
    result = CliRunner().invoke(app, ["sweep", str(spec), "--workers", "1"])
    assert result.exit_code == 1
    assert "failed: RuntimeError: engine broke" in result.output
