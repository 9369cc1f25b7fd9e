"""On-disk outputs: every file written, one self-contained HTML, byte-identical reruns."""

from __future__ import annotations

import base64
import csv
import json
import re

import pytest

from simulations.metrics import summarize
from simulations.plots import render_plots
from simulations.report import write_outputs
from simulations.run import JobRecord, RunResult

FILES = {
    "summary.json",
    "summary.csv",
    "jobs.csv",
    "utilisation.png",
    "queue_length.png",
    "jct_cdf.png",
    "report.html",
}
IMG = '<img src="data:image/png;base64,'


def results():
    """A deadlocked per-pod run and a phalanx run that finished, on two queues."""
    per_pod = RunResult(
        "two-queues",
        "per-pod",
        [
            JobRecord("a", "research", 2, 4, 60.0, 0.0, placed=1, attempts=1, first_placed_at=0.0),
            JobRecord("b", "prod", 2, 4, 60.0, 0.0, placed=1, attempts=1, first_placed_at=0.0),
        ],
        total_gpus=4,
        end_time=600.0,
        events=10,
        deadlock_at=0.02,
        idle_held_gpu_seconds=2400.0,
    )
    phalanx = RunResult(
        "two-queues",
        "phalanx",
        [
            JobRecord("a", "research", 2, 4, 60.0, 0.0, 0.0, 60.0, 2, 1),
            JobRecord("b", "prod", 2, 4, 60.0, 0.0, 60.0, 120.0, 2, 1),
        ],
        total_gpus=4,
        end_time=600.0,
        events=6,
    )
    return [per_pod, phalanx]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "out"
    return folder, write_outputs(results(), folder, description="Two <gangs> & one node.")


def test_write_outputs_writes_and_returns_every_file(out):
    folder, paths = out
    assert {p.name for p in paths} == FILES
    assert {p.name for p in folder.iterdir()} == FILES


def test_report_embeds_every_plot_as_a_data_uri(out):
    folder, _ = out
    page = (folder / "report.html").read_text()
    embedded = re.findall(re.escape(IMG) + r"([A-Za-z0-9+/=]+)", page)
    assert [base64.b64decode(e) for e in embedded] == [
        (folder / name).read_bytes()
        for name in ("utilisation.png", "queue_length.png", "jct_cdf.png")
    ]


def test_report_loads_nothing_from_outside_the_file(out):
    page = (out[0] / "report.html").read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert re.findall(r'src="(?!data:)', page) == []
    assert "http://" not in page and "https://" not in page


def test_report_has_a_comparison_column_per_scheduler(out):
    page = (out[0] / "report.html").read_text()
    assert "<th>figure</th><th>meaning</th><th>per-pod</th><th>phalanx</th>" in page
    assert "<tr><td>jct_p99_s</td>" in page and "<tr><td>fairness_jain</td>" in page


def test_report_names_the_scenario_and_escapes_its_description(out):
    page = (out[0] / "report.html").read_text()
    assert "<h1>Phalanx simulation: two-queues</h1>" in page
    assert "Two &lt;gangs&gt; &amp; one node." in page


def test_report_breaks_service_down_per_queue_when_there_are_several(out):
    page = (out[0] / "report.html").read_text()
    assert "<h2>Per queue</h2>" in page
    assert "<tr><td>prod</td><td>0.0%</td><td>100.0%</td></tr>" in page


def test_report_calls_out_a_deadlock(out):
    page = (out[0] / "report.html").read_text()
    assert "<b>per-pod</b> deadlocked at t=0.02 s" in page


def test_summary_json_holds_the_summary_of_every_run(out):
    rows = json.loads((out[0] / "summary.json").read_text())
    assert rows == [summarize(r) for r in results()]


def test_jobs_csv_has_a_row_per_job_of_every_run_with_its_scheduler(out):
    with (out[0] / "jobs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["scheduler"], r["job"], r["state"]) for r in rows] == [
        ("per-pod", "a", "partial"),
        ("per-pod", "b", "partial"),
        ("phalanx", "a", "done"),
        ("phalanx", "b", "done"),
    ]


def test_identical_inputs_give_byte_identical_files(tmp_path):
    first = write_outputs(results(), tmp_path / "one", description="same")
    second = write_outputs(results(), tmp_path / "two", description="same")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_plots_carry_no_software_or_date_metadata():
    for png in render_plots(results()).values():
        assert png.startswith(b"\x89PNG") and b"matplotlib" not in png
        assert b"tIME" not in png


def test_write_outputs_refuses_no_runs(tmp_path):
    with pytest.raises(ValueError, match="at least one run"):
        write_outputs([], tmp_path)
