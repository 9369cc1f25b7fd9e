"""deploy/'s webhook configurations are generated from configs.py by `phalanx
webhook-configs`, which `--check` (CI) holds them to. (That the rendered kustomize base
and Helm chart carry exactly configs.py's webhooks: tests/deploy.)"""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from controller.cli import app
from controller.webhook import configs, manifests
from tests.wide_cli import invoke


def test_the_check_names_each_stale_file_and_how_to_regenerate(tmp_path: Path) -> None:
    (tmp_path / manifests.KUSTOMIZE).parent.mkdir(parents=True)
    (tmp_path / manifests.KUSTOMIZE).write_text("# edited by hand\n")
    result = invoke(["webhook-configs", "--check", "--root", str(tmp_path)], columns=400)
    assert result.exit_code == 1
    assert str(manifests.KUSTOMIZE) in result.output and str(manifests.HELM) in result.output
    assert "run `phalanx webhook-configs` to regenerate" in result.output


def test_written_files_pass_the_check(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["webhook-configs", "--root", str(tmp_path)]).exit_code == 0
    checked = runner.invoke(app, ["webhook-configs", "--check", "--root", str(tmp_path)])
    assert checked.exit_code == 0 and "up to date" in checked.output


def test_the_kustomize_file_reads_back_as_configs_py_builds_it() -> None:
    documents = list(yaml.safe_load_all(manifests.kustomize_text()))
    service = (manifests.NAMESPACE, manifests.SERVICE, manifests.PORT)
    assert documents == list(
        configs.configurations(service=service, system_namespaces=(manifests.NAMESPACE,))
    )
