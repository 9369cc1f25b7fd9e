"""`phalanx controller` against the emulator: it admits a GangJob, serves /readyz and
/metrics, logs JSON, and on SIGTERM stops cleanly and releases its Lease. The command owns
the main thread (signals), the emulator runs in another."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml
from typer.testing import CliRunner

from controller.cli import app
from controller.kube.leader import LEASES
from emulator import Emulator
from tests.kube.controller_cluster import gang_job, queue
from tests.kube.controller_env import load_crds
from tests.ports import unassigned_port


def cluster_manifest(path: Path) -> Path:
    job = gang_job("hello", [("w", 2)])
    job["spec"]["podSets"][0]["template"]["spec"]["tolerations"] = [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}
    ]
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"n{i}"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"}},
        }
        for i in range(2)
    ]
    lease_home = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "phalanx-system"}}
    path.write_text(yaml.safe_dump_all([lease_home, *nodes, queue(), job]))
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Emulator]:
    """An emulator with the CRDs, two nodes, a queue and a GangJob, in its own thread."""
    started = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        async with Emulator(controllers=True) as emu:
            await load_crds(emu)
            await emu.load(cluster_manifest(tmp_path / "cluster.yaml"))
            holder.update(emu=emu, stop=stop, loop=asyncio.get_running_loop())
            started.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    emu = holder["emu"]
    assert isinstance(emu, Emulator)
    yield emu
    loop, stop = holder["loop"], holder["stop"]
    assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event)
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """The command sends logs to the runner's stream, closed after it: undo that."""
    handlers, level = logging.getLogger().handlers[:], logging.getLogger().level
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers = handlers
    logging.getLogger().setLevel(level)


@pytest.fixture
def health_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A free port for /metrics, /healthz, /readyz (the command must be told it)."""
    port = unassigned_port()
    monkeypatch.setenv("PHALANX_HEALTH_HOST", "127.0.0.1")
    monkeypatch.setenv("PHALANX_HEALTH_PORT", str(port))
    monkeypatch.setenv("PHALANX_WEBHOOK_HOST", "127.0.0.1")
    monkeypatch.setenv("PHALANX_WEBHOOK_PORT", "0")
    monkeypatch.setenv("PHALANX_IDENTITY", "cli-replica")
    return port


def api_get(emu: Emulator, path: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{emu.url}{path}", headers={"Authorization": f"Bearer {emu.token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        found = json.load(answer)
    assert isinstance(found, dict)
    return found


def admission(emu: Emulator) -> object:
    job = api_get(emu, "/apis/phalanx.dev/v1alpha1/namespaces/default/gangjobs/hello")
    return (job.get("status") or {}).get("admission")  # type: ignore[attr-defined]


def served_page(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()
    except OSError:
        return 0, ""  # not listening yet


def test_the_controller_command_admits_serves_metrics_and_stops_on_sigterm(
    served: Emulator, health_port: int
) -> None:
    seen: dict[str, object] = {}

    def watch_then_stop() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "metrics" not in seen:
            if "ready" not in seen and served_page(health_port, "/readyz")[0] == 200:
                seen["ready"] = True
            record = admission(served)
            if record and "ready" in seen:
                seen["record"] = record
                seen["metrics"] = served_page(health_port, "/metrics")[1]
                seen["healthz"] = served_page(health_port, "/healthz")[0]
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch_then_stop, daemon=True)
    watcher.start()
    result = CliRunner().invoke(app, ["controller", "--kubeconfig", str(served.kubeconfig_path)])
    watcher.join(10)
    assert result.exit_code == 0, result.output
    record = seen["record"]
    assert isinstance(record, dict) and record["queue"] == "q"
    exposition = str(seen["metrics"]).splitlines()
    assert 'phalanx_admission_attempts_total{outcome="admitted"} 1.0' in exposition
    assert "phalanx_leader 1.0" in exposition
    assert any(line.startswith("phalanx_cycle_duration_seconds_count ") for line in exposition)
    assert seen["healthz"] == 200
    lease = api_get(served, LEASES.path("phalanx-system", "phalanx-controller"))
    assert "holderIdentity" not in lease["spec"]  # type: ignore[operator]


def test_the_controller_command_logs_one_json_object_per_line(
    served: Emulator, health_port: int
) -> None:
    threading.Timer(5.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    result = CliRunner().invoke(app, ["controller", "--kubeconfig", str(served.kubeconfig_path)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    events = [line["event"] for line in lines]
    assert "leading" in events and "shutting down" in events
    assert all({"timestamp", "level", "event"} <= line.keys() for line in lines)


def test_the_controller_command_names_a_missing_kubeconfig(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["controller", "--kubeconfig", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.strip() == f"--kubeconfig {tmp_path / 'nope'}: no such file"


def test_the_controller_command_reads_kubeconfig_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'env-config'}{os.pathsep}{tmp_path / 'b'}")
    result = CliRunner().invoke(app, ["controller"])
    assert result.exit_code == 2
    assert result.output.strip() == f"$KUBECONFIG {tmp_path / 'env-config'}: no such file"


def test_the_webhook_command_names_a_missing_kubeconfig(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["webhook", "--kubeconfig", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.strip() == f"--kubeconfig {tmp_path / 'nope'}: no such file"
