"""Simulated kubelets (emulator/kubelet.py) against the emulator, on loop time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from emulator.kubelet import (
    CHECKPOINT_ANNOTATION,
    DURATION_ANNOTATION,
    EXIT_CODE_ANNOTATION,
    Kubelet,
    NodeDescription,
    api_client,
    nodes_from_groups,
)
from simulations.scenario import NodeGroup
from tests.kube.client import Client, Obj, namespace, pod, running, schedule

pytestmark = pytest.mark.looptime(noop_cycles=500)

NS = "/api/v1/namespaces/t"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/t/resourceclaims"


async def until(check: Callable[[], Awaitable[Any]], seconds: float = 120.0) -> Any:
    """The first truthy value of `check`, polled on loop time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


@pytest.fixture
async def kube() -> AsyncIterator[Client]:
    async with running(controllers=True) as client:
        await client.ok("POST", "/api/v1/namespaces", namespace("t"))
        yield client


@asynccontextmanager
async def kubelets(kube: Client) -> AsyncIterator[Kubelet]:
    """Two nodes' kubelets (n1 with 2 GPUs). Started in the test itself, not in a fixture:
    looptime fakes the clock of the test body only, and the kubelet's timers need it."""
    nodes = [
        NodeDescription("n1", gpus=2, device_attributes={"model": "h100"}),
        NodeDescription("n2"),
    ]
    async with (
        await api_client(kube.emulator.kubeconfig_path) as api,
        Kubelet(api, nodes, ready_seconds=5.0) as agent,
    ):
        yield agent


async def bound_pod(kube: Client, name: str, node: str = "n1", **annotations: str) -> None:
    body = pod(name)
    body["metadata"]["annotations"] = annotations
    await kube.ok("POST", f"{NS}/pods", body)
    await kube.ok("POST", f"{NS}/pods/{name}/binding", {"target": {"kind": "Node", "name": node}})


async def phase(kube: Client, name: str) -> str | None:
    found = await kube.get(f"{NS}/pods/{name}")
    return found["status"].get("phase") if found else None


def condition(obj: Obj, kind: str) -> str | None:
    for found in obj["status"].get("conditions") or []:
        if found["type"] == kind:
            return str(found["status"])
    return None


def test_node_groups_become_node_descriptions() -> None:
    group = NodeGroup(name="gpu", count=2, gpus=8, labels={"zone": "a"})
    assert [(n.name, n.gpus, n.labels) for n in nodes_from_groups([group])] == [
        ("gpu-0", 8, {"zone": "a"}),
        ("gpu-1", 8, {"zone": "a"}),
    ]


async def test_nodes_register_ready_with_their_slices_and_leases(kube: Client) -> None:
    async with kubelets(kube):
        node = await kube.ok("GET", "/api/v1/nodes/n1")
        assert condition(node, "Ready") == "True" and node["status"]["allocatable"]["pods"] == "110"
        assert kube.emulator.controllers is not None
        await kube.emulator.controllers.idle()  # the node lifecycle controller drops the taint
        untainted = await kube.ok("GET", "/api/v1/nodes/n1")
        assert "taints" not in untainted["spec"]
        slices = (await kube.ok("GET", "/apis/resource.k8s.io/v1/resourceslices"))["items"]
        assert [(s["spec"]["nodeName"], len(s["spec"]["devices"])) for s in slices] == [("n1", 2)]
        assert slices[0]["spec"]["devices"][0]["attributes"] == {"model": {"string": "h100"}}
        lease = await kube.ok(
            "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2"
        )
        assert lease["spec"]["holderIdentity"] == "n2"


async def test_node_leases_are_renewed(kube: Client) -> None:
    async with kubelets(kube) as kubelet:
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        first = (await kube.ok("GET", path))["spec"]["renewTime"]

        async def renewed() -> bool:
            return bool((await kube.ok("GET", path))["spec"]["renewTime"] != first)

        assert await until(renewed, kubelet.renew_seconds * 2)


async def test_a_bound_pod_runs_then_is_ready_then_succeeds_after_its_duration(
    kube: Client,
) -> None:
    async with kubelets(kube):
        await bound_pod(kube, "p1", **{DURATION_ANNOTATION: "30"})
        running_pod = await until(lambda: _running(kube, "p1"))
        assert condition(running_pod, "Ready") == "False"
        ready = await until(lambda: _ready(kube, "p1"))
        assert ready["status"]["containerStatuses"][0]["state"]["running"]
        assert await until(lambda: _phase_is(kube, "p1", "Succeeded"))


async def test_a_pods_run_is_timed_from_its_binding_not_from_its_status_writes(
    kube: Client,
) -> None:
    async with kubelets(kube):  # Ready only 5 s after it starts: within its 30 s
        loop = asyncio.get_running_loop()
        await bound_pod(kube, "p1", **{DURATION_ANNOTATION: "30"})
        bound = loop.time()
        await until(lambda: _phase_is(kube, "p1", "Succeeded"))
        assert 30 <= loop.time() - bound < 30.5


async def _running(kube: Client, name: str) -> Obj | None:
    found = await kube.get(f"{NS}/pods/{name}")
    return found if found and found["status"].get("phase") == "Running" else None


async def _ready(kube: Client, name: str) -> Obj | None:
    found = await kube.get(f"{NS}/pods/{name}")
    return found if found and condition(found, "Ready") == "True" else None


async def _phase_is(kube: Client, name: str, wanted: str) -> bool:
    return await phase(kube, name) == wanted


async def test_a_pod_with_a_nonzero_exit_code_annotation_fails(kube: Client) -> None:
    async with kubelets(kube):
        await bound_pod(kube, "p1", **{DURATION_ANNOTATION: "1", EXIT_CODE_ANNOTATION: "3"})
        assert await until(lambda: _phase_is(kube, "p1", "Failed"))
        found = await kube.ok("GET", f"{NS}/pods/p1")
        assert found["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


async def test_finish_ends_a_running_pod_on_request(kube: Client) -> None:
    async with kubelets(kube) as kubelet:
        await bound_pod(kube, "p1")
        await until(lambda: _ready(kube, "p1"))
        await kubelet.finish("t", "p1")
        assert await phase(kube, "p1") == "Succeeded"


async def test_pods_on_other_nodes_are_left_alone(kube: Client) -> None:
    async with kubelets(kube):
        await bound_pod(kube, "p1", node="elsewhere")
        await asyncio.sleep(30)
        assert await phase(kube, "p1") == "Pending"


async def claim_pod(kube: Client, name: str) -> None:
    await kube.ok(
        "POST",
        CLAIMS,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": f"{name}-gpu"},
            "spec": {
                "devices": {"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu"}}]}
            },
        },
    )
    body = pod(name, resourceClaims=[{"name": "gpu", "resourceClaimName": f"{name}-gpu"}])
    await kube.ok("POST", f"{NS}/pods", body)


async def test_a_pod_whose_claims_are_allocated_and_reserved_for_it_starts(kube: Client) -> None:
    async with kubelets(kube):
        await claim_pod(kube, "p1")
        await schedule(kube, "p1", "p1-gpu")
        assert await until(lambda: _ready(kube, "p1"))


async def test_a_pod_whose_claim_is_not_allocated_fails_with_an_event(kube: Client) -> None:
    async with kubelets(kube):
        await claim_pod(kube, "p1")
        await kube.ok("POST", f"{NS}/pods/p1/binding", {"target": {"kind": "Node", "name": "n1"}})
        assert await until(lambda: _phase_is(kube, "p1", "Failed"))
        found = await kube.ok("GET", f"{NS}/pods/p1")
        assert found["status"]["reason"] == "FailedPrepareDynamicResources"
        events = (await kube.ok("GET", f"{NS}/events"))["items"]
        assert [(e["reason"], e["message"]) for e in events] == [
            ("FailedPrepareDynamicResources", "resourceclaim t/p1-gpu is not allocated")
        ]


async def test_a_gracefully_deleted_pod_is_stopped_and_removed(kube: Client) -> None:
    async with kubelets(kube):
        await bound_pod(kube, "p1")
        await until(lambda: _ready(kube, "p1"))
        await kube.ok("DELETE", f"{NS}/pods/p1")
        assert await until(lambda: _gone(kube, f"{NS}/pods/p1"))


async def test_a_deleted_pod_stays_terminating_while_its_containers_stop(kube: Client) -> None:
    async with kubelets(kube):
        await bound_pod(kube, "p1", **{"phalanx.dev/sim-stop-seconds": "20"})
        await until(lambda: _ready(kube, "p1"))
        await kube.ok("DELETE", f"{NS}/pods/p1")
        await asyncio.sleep(15)
        stopping = await kube.ok("GET", f"{NS}/pods/p1")
        assert stopping["metadata"]["deletionTimestamp"]
        assert stopping["status"]["phase"] == "Running"
        await asyncio.sleep(10)
        assert await _gone(kube, f"{NS}/pods/p1")


async def test_containers_slower_than_the_grace_period_are_killed_when_it_ends(
    kube: Client,
) -> None:
    async with kubelets(kube):
        await bound_pod(kube, "p1", **{"phalanx.dev/sim-stop-seconds": "600"})
        await until(lambda: _ready(kube, "p1"))
        await kube.ok("DELETE", f"{NS}/pods/p1", query={"gracePeriodSeconds": "5"})
        await asyncio.sleep(4)
        assert await kube.get(f"{NS}/pods/p1") is not None
        await asyncio.sleep(2)
        assert await _gone(kube, f"{NS}/pods/p1")


async def _gone(kube: Client, path: str) -> bool:
    return await kube.get(path) is None


@pytest.mark.parametrize(
    ("checkpoint", "left"),
    [({CHECKPOINT_ANNOTATION: "30"}, 100 - 60), ({}, 100)],
    ids=["from-its-last-checkpoint", "from-the-start-without-checkpoints"],
)
async def test_a_pod_run_again_after_being_stopped_resumes(
    kube: Client, checkpoint: dict[str, str], left: float
) -> None:
    async with kubelets(kube):
        loop = asyncio.get_running_loop()
        await bound_pod(kube, "p1", **{DURATION_ANNOTATION: "100"}, **checkpoint)
        await asyncio.sleep(70)  # two checkpoints taken, at 30 and 60 s
        await kube.ok("DELETE", f"{NS}/pods/p1")
        await until(lambda: _gone(kube, f"{NS}/pods/p1"))
        await bound_pod(kube, "p1", **{DURATION_ANNOTATION: "100"}, **checkpoint)
        again = loop.time()
        await until(lambda: _phase_is(kube, "p1", "Succeeded"))
        assert left <= loop.time() - again < left + 0.5


async def test_a_pod_lost_with_its_node_keeps_its_last_checkpoint(kube: Client) -> None:
    async with kubelets(kube) as kubelet:
        loop = asyncio.get_running_loop()
        work = {DURATION_ANNOTATION: "100", CHECKPOINT_ANNOTATION: "25"}
        await bound_pod(kube, "p1", **work)
        await asyncio.sleep(60)  # checkpoints at 25 and 50 s
        await kubelet.fail_node("n1")
        await kube.ok("DELETE", f"{NS}/pods/p1", query={"gracePeriodSeconds": "0"})
        await until(lambda: _gone(kube, f"{NS}/pods/p1"))
        await bound_pod(kube, "p1", "n2", **work)
        again = loop.time()
        await until(lambda: _phase_is(kube, "p1", "Succeeded"))
        assert 50 <= loop.time() - again < 50.5


async def test_a_failed_node_is_not_ready_and_its_pods_are_lost(kube: Client) -> None:
    async with kubelets(kube) as kubelet:
        await bound_pod(kube, "p1")
        await until(lambda: _ready(kube, "p1"))
        await kubelet.fail_node("n1")
        node = await kube.ok("GET", "/api/v1/nodes/n1")
        assert condition(node, "Ready") == "Unknown"
        lost = await kube.ok("GET", f"{NS}/pods/p1")
        assert (lost["status"]["phase"], lost["status"]["reason"]) == ("Failed", "NodeLost")
