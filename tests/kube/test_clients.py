"""Real clients talk to the emulator unchanged: kubernetes-asyncio and kubectl."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client, config, watch

from emulator import Emulator


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(tls=True, controllers=True) as emu:
        yield emu


@pytest.fixture
async def core(emulator: Emulator) -> AsyncIterator[client.CoreV1Api]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(emulator.kubeconfig_path), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api_client:
        yield client.CoreV1Api(api_client)


def _pod(name: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "demo"}),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="registry.k8s.io/pause:3.10")]
        ),
    )


async def test_kubernetes_asyncio_creates_and_lists_pods(core: client.CoreV1Api) -> None:
    await core.create_namespaced_pod("default", _pod("p1"))
    pods = await core.list_namespaced_pod("default", label_selector="app=demo")
    assert [p.metadata.name for p in pods.items] == ["p1"]
    assert pods.items[0].spec.scheduler_name == "default-scheduler"


async def test_kubernetes_asyncio_watch_sees_a_created_pod(core: client.CoreV1Api) -> None:
    listed = await core.list_namespaced_pod("default")
    seen: list[tuple[str, str]] = []

    async def follow() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                core.list_namespaced_pod,
                "default",
                resource_version=listed.metadata.resource_version,
                timeout_seconds=5,
            ):
                seen.append((event["type"], event["object"].metadata.name))
                return

    watcher = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    await core.create_namespaced_pod("default", _pod("p2"))
    await asyncio.wait_for(watcher, 10)
    assert seen == [("ADDED", "p2")]


async def test_kubernetes_asyncio_gets_not_found_as_api_exception(core: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as caught:
        await core.read_namespaced_pod("missing", "default")
    assert caught.value.status == 404


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
async def test_kubectl_get_nodes_works(emulator: Emulator) -> None:
    kubeconfig = str(emulator.kubeconfig_path)
    create = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        kubeconfig,
        "create",
        "-f",
        "-",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await create.communicate(b"apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n")
    assert create.returncode == 0, err.decode()
    get = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        kubeconfig,
        "get",
        "nodes",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await get.communicate()
    assert get.returncode == 0, err.decode()
    assert "n1" in out.decode()


async def test_phalanx_emulator_announces_a_kubeconfig_and_loads_our_crds() -> None:
    from pathlib import Path

    from emulator.cli import manifests_in, serve

    lines: list[str] = []
    stop = asyncio.Event()
    crds = manifests_in([Path(__file__).parents[2] / "crds"])

    def announce(line: str) -> None:
        lines.append(line)
        if line.endswith("kubeconfig"):
            stop.set()

    await asyncio.wait_for(
        serve(port=0, tls=True, manifests=crds, announce=announce, stop=stop), 30
    )
    assert lines[-1].endswith("kubeconfig") and Path(lines[-1]).exists()
    assert [line.split()[1] for line in lines[:-1]] == [
        "gangjobs.phalanx.dev",
        "queues.phalanx.dev",
    ]
