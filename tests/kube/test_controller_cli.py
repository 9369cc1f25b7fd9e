"""`phalanx controller` against the emulator: it admits a GangJob and stops cleanly on
SIGTERM. The command owns the main thread (signals), the emulator runs in another."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from controller.cli import app
from emulator import Emulator
from tests.kube.controller_cluster import gang_job, queue
from tests.kube.controller_env import load_crds


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
    path.write_text(yaml.safe_dump_all([*nodes, queue(), job]))
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


def admission(emu: Emulator) -> dict[str, object] | None:
    request = urllib.request.Request(
        f"{emu.url}/apis/phalanx.dev/v1alpha1/namespaces/default/gangjobs/hello",
        headers={"Authorization": f"Bearer {emu.token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return (json.load(answer).get("status") or {}).get("admission")


def test_the_controller_command_admits_a_gangjob_and_stops_on_sigterm(served: Emulator) -> None:
    seen: list[dict[str, object]] = []

    def stop_once_admitted() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = admission(served)
            if record:
                seen.append(record)
                break
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=stop_once_admitted, daemon=True)
    watcher.start()
    result = CliRunner().invoke(app, ["controller", "--kubeconfig", str(served.kubeconfig_path)])
    watcher.join(10)
    assert result.exit_code == 0, result.output
    assert seen and seen[0]["queue"] == "q"


def test_the_controller_command_names_a_missing_kubeconfig(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["controller", "--kubeconfig", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.strip() == f"--kubeconfig {tmp_path / 'nope'}: no such file"
