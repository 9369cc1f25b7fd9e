"""Crash safety: the controller fail-stops after every write of an admission in turn, a
fresh one takes over, and the live objects show no leaked device, no double allocation,
no partial gang and exact quota. A record that no longer holds is rolled back."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from controller.kube import resources as r
from controller.kube.loop import EVENTS
from controller.kube.rest import Rest
from controller.kube.translate import admission_of, recorded_devices
from emulator import Emulator
from tests.kube.controller_cluster import (
    NAMESPACE,
    Running,
    allocated_claim,
    finish_pods,
    gang_job,
    gpu_cluster,
    items,
    job,
    recovered,
    running,
    until,
    writes_until,
)
from tests.kube.controller_env import crds, create, emulator, rest

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime

PODS = 2
WRITES = 13
"""At most: finalizer, record, its Event, Service, then per pod claim, pod, allocation,
binding (and maybe one Queued status write first)."""


@pytest.fixture
async def cluster(crds: Rest) -> Rest:
    await gpu_cluster(crds, nodes=2, gpus=2, queue_gpus=2)
    await create(crds, r.GANG_JOBS, gang_job("train", [("w", PODS)], gpu=True))
    return crds


async def gang_bound(rest: Rest) -> bool:
    pods = await items(rest, r.PODS)
    return len(pods) == PODS and all(p["spec"].get("nodeName") for p in pods)


async def kubelet_finishes_deletions(rest: Rest) -> None:
    """What the kubelet does for a deleted pod: stop it, then remove it for good."""
    for pod in await items(rest, r.PODS):
        if pod["metadata"].get("deletionTimestamp"):
            name = pod["metadata"]["name"]
            await rest.request(
                "DELETE", r.PODS.path(NAMESPACE, name), query={"gracePeriodSeconds": 0}
            )


async def assert_exact(rest: Rest, running: Running, foreign: int = 0) -> None:
    """The live objects: whole gang, devices held once each, claims reserved for their
    pods, quota charged exactly what the record holds."""
    pods = {p["metadata"]["name"]: p for p in await items(rest, r.PODS)}
    claims = await items(rest, r.RESOURCE_CLAIMS)
    assert sorted(pods) == [f"train-w-{i}" for i in range(PODS)]
    assert all(p["spec"].get("nodeName") for p in pods.values())
    held = Counter(
        (d["pool"], d["device"])
        for c in claims
        for d in ((c.get("status") or {}).get("allocation") or {})
        .get("devices", {})
        .get("results", [])
    )
    assert len(claims) == PODS + foreign
    assert all(n == 1 for n in held.values()) and len(held) == PODS + foreign
    record = (await job(rest, "train"))["status"]["admission"]
    recorded = {
        (d["pool"], d["device"])
        for ps in record["podSets"]
        for p in ps["pods"]
        for c in p["claims"]
        for d in recorded_devices(c)
    }
    assert recorded <= set(held) and len(recorded) == PODS
    for claim in claims[: PODS if not foreign else None]:
        if claim["metadata"]["name"] == "theirs":
            continue
        (consumer,) = claim["status"]["reservedFor"]
        assert consumer["uid"] == pods[consumer["name"]]["metadata"]["uid"]
    assert running.controller is not None
    state = running.controller.caches.state
    assert state.quota.usage("q").get("devices/gpu") == PODS
    assert state.violations() == []


@pytest.mark.parametrize("writes", range(WRITES))
async def test_a_controller_stopped_after_any_write_is_rolled_forward_by_the_next(
    cluster: Rest, emulator: Emulator, running: Running, writes: int
) -> None:
    await recovered(emulator, running, writes, lambda: gang_bound(cluster))
    await assert_exact(cluster, running)
    await finish_pods(cluster, "train")

    async def released() -> bool:
        return not await items(cluster, r.RESOURCE_CLAIMS)

    await until(released)
    assert (await job(cluster, "train"))["status"]["phase"] == "Succeeded"
    assert running.controller is not None
    assert running.controller.caches.state.quota.usage("q").get("devices/gpu", 0) == 0


async def test_every_write_of_an_admission_is_covered(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    assert await writes_until(emulator, running, lambda: gang_bound(cluster)) <= WRITES


async def test_a_record_whose_device_was_taken_meanwhile_is_rolled_back(
    cluster: Rest, emulator: Emulator, running: Running
) -> None:
    await running.start()
    await until(lambda: gang_bound(cluster))
    await running.crash()
    record = (await job(cluster, "train"))["status"]["admission"]
    first = record["admissionId"]
    device = recorded_devices(record["podSets"][0]["pods"][0]["claims"][0])[0]
    await allocated_claim(cluster, "theirs", (device["pool"], device["device"]))
    await running.start()

    async def lost_and_admitted_again() -> bool:
        await kubelet_finishes_deletions(cluster)
        record = (await job(cluster, "train"))["status"].get("admission") or {}
        pods = await items(cluster, r.PODS)
        return (
            record.get("admissionId") not in (None, first)
            and len(pods) == PODS
            and all(p["spec"].get("nodeName") for p in pods)
            and all(admission_of(p) == record["admissionId"] for p in pods)
        )

    await until(lost_and_admitted_again)
    events = await items(cluster, EVENTS)
    assert "AdmissionLost" in {e["reason"] for e in events}
    await asyncio.sleep(2)
    await assert_exact(cluster, running, foreign=1)
