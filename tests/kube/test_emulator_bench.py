"""`phalanx bench emulator` at a tiny size: the table and the JSON have the figures and
targets (timings are the command's business, not a test's)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from controller.cli import app


def test_bench_emulator_prints_a_table_and_writes_its_figures_as_json(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    size = ["--nodes", "2", "--pods", "4", "--watchers", "2", "--probes", "2"]
    result = CliRunner().invoke(app, ["bench", "emulator", *size, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "phalanx bench emulator" in result.output
    written = json.loads(out.read_text())
    figures = written["figures"]
    assert (figures["nodes"], figures["pods"], figures["watchers"]) == (2, 4, 2)
    assert figures["watch_events_delivered"] == 2 * (2 * 4 + 2)
    assert (
        set(written["targets"])
        == set(written["met"])
        == {
            "simple_writes_per_s",
            "watch_p95_ms",
            "server_peak_rss_mib",
        }
    )
    for name in ("create_pod_per_s", "bind_per_s", "get_per_s", "list_per_s", "watch_p95_ms"):
        assert figures[name] > 0, name
