"""`phalanx replay` refuses, in one line and before touching any cluster, what it cannot
run live."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from controller.cli import app

SCENARIO = (
    "name: small\nhorizon: 3600\n"
    "cluster: [{name: gpu, count: 2, gpus: 8}]\n"
    "workload:\n  jobs: [{name: j, pods: 1, gpusPerPod: 1, duration: 10}]\n"
)


@pytest.fixture(autouse=True)
def logs_as_they_were() -> Iterator[None]:
    """The command sets up JSON logs for the whole process: put them back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


def test_a_job_name_no_gang_job_can_have_is_refused_in_one_line_with_exit_code_2(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad-name.yaml"
    path.write_text(SCENARIO.replace("name: j,", "name: J_1,"))
    result = CliRunner().invoke(app, ["replay", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "workload: job 'J_1': not usable as a GangJob name (a DNS label whose pod names, "
        "e.g. 'J_1-worker-0', stay within 63 characters)"
    ]


def test_a_missing_kubeconfig_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(SCENARIO)
    missing = tmp_path / "nowhere.yaml"
    result = CliRunner().invoke(app, ["replay", str(path), "--kubeconfig", str(missing)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"--kubeconfig {missing}: no such file"
