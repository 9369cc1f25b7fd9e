"""The controller end to end on the emulator: whole gangs bound, devices and torchrun
environment right, quota waits for a release, others' claims respected."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from controller.kube import resources as r
from controller.kube.commit import DELETE_PROTECTION
from controller.kube.informer import Informer
from controller.kube.rest import Obj, Rest
from tests.kube.controller_cluster import (
    NAMESPACE,
    add_node,
    allocated_claim,
    finish_pods,
    gang_job,
    gpu_cluster,
    items,
    job,
    queue,
    running,
    until,
)
from tests.kube.controller_env import crds, create, emulator, rest

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime


def bound_by_gang(pods: list[Obj]) -> Counter[str]:
    return Counter(
        p["metadata"]["labels"]["phalanx.dev/gang"] for p in pods if p["spec"].get("nodeName")
    )


async def test_two_100_pod_gangs_on_100_one_slot_nodes_bind_100_and_0(crds: Rest, running) -> None:
    for i in range(100):
        await add_node(crds, f"n{i}")
    await create(crds, r.QUEUES, queue())
    bindings: list[tuple[str, str]] = []
    watcher = Informer(crds, r.PODS)

    def record(kind: str, old: Obj | None, new: Obj) -> None:
        if new["spec"].get("nodeName") and not (old or {}).get("spec", {}).get("nodeName"):
            bindings.append(
                (new["metadata"]["labels"]["phalanx.dev/gang"], new["metadata"]["name"])
            )

    watcher.add_handler(record)
    watching = asyncio.create_task(watcher.run())
    await create(crds, r.GANG_JOBS, gang_job("a", [("w", 100)]))
    await create(crds, r.GANG_JOBS, gang_job("b", [("w", 100)]))
    await running.start()

    async def a_gang_is_bound() -> bool:
        return max(bound_by_gang(await items(crds, r.PODS)).values(), default=0) == 100

    await until(a_gang_is_bound)
    await asyncio.sleep(5)
    watching.cancel()
    final = bound_by_gang(await items(crds, r.PODS))
    assert sorted(final.values()) == [100]
    assert len({gang for gang, _ in bindings}) == 1 and len(bindings) == 100
    loser = "b" if "a" in final else "a"
    waiting = await job(crds, loser)
    assert waiting["status"]["phase"] == "Pending"
    queued = {c["type"]: c for c in waiting["status"]["conditions"]}["Queued"]
    assert queued["status"] == "True" and queued["message"]


async def test_a_16_pod_pytorch_gang_gets_16_devices_and_the_torchrun_environment(
    crds: Rest, running
) -> None:
    await gpu_cluster(crds, nodes=4, gpus=4, queue_gpus=16)
    await create(crds, r.GANG_JOBS, gang_job("torch", [("master", 1), ("worker", 15)], gpu=True))
    await running.start()

    async def all_bound() -> bool:
        pods = await items(crds, r.PODS)
        return len(pods) == 16 and all(p["spec"].get("nodeName") for p in pods)

    await until(all_bound)
    pods = {p["metadata"]["name"]: p for p in await items(crds, r.PODS)}
    claims = {c["metadata"]["name"]: c for c in await items(crds, r.RESOURCE_CLAIMS)}
    devices = set()
    for i, name in enumerate(["torch-master-0", *(f"torch-worker-{k}" for k in range(15))]):
        pod = pods[name]
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["MASTER_ADDR"] == "torch-master-0.torch.default.svc"
        assert (env["MASTER_PORT"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == (
            "29500",
            "16",
            "1",
        )
        assert (env["RANK"], env["NODE_RANK"]) == (str(i), str(i))
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (name, "torch")
        assert pod["spec"]["schedulerName"] == "phalanx"
        ref = pod["spec"]["resourceClaims"][0]
        claim = claims[ref["resourceClaimName"]]
        assert claim["metadata"]["finalizers"] == [DELETE_PROTECTION]
        assert [c["uid"] for c in claim["status"]["reservedFor"]] == [pod["metadata"]["uid"]]
        (result,) = claim["status"]["allocation"]["devices"]["results"]
        assert result["pool"] == pod["spec"]["nodeName"]
        devices.add((result["pool"], result["device"]))
    assert len(devices) == 16
    service = await crds.get(
        r.Resource("", "v1", "services", "Service", True).path(NAMESPACE, "torch")
    )
    assert service["spec"]["clusterIP"] == "None"
    torch = await job(crds, "torch")
    assert torch["status"]["phase"] == "Admitted"
    assert {c["type"]: c["status"] for c in torch["status"]["conditions"]} == {
        "Queued": "False",
        "Admitted": "True",
    }


async def test_quota_holds_a_third_job_until_one_finishes(crds: Rest, running) -> None:
    await gpu_cluster(crds, nodes=2, gpus=8, queue_gpus=8)
    for name in ("one", "two", "three"):
        await create(crds, r.GANG_JOBS, gang_job(name, [("w", 4)], gpu=True))
    controller = await running.start()

    async def phases() -> dict[str, str]:
        return {
            j["metadata"]["name"]: (j.get("status") or {}).get("phase", "")
            for j in await items(crds, r.GANG_JOBS)
        }

    async def two_admitted() -> bool:
        return Counter((await phases()).values())["Admitted"] == 2

    await until(two_admitted)
    await asyncio.sleep(5)
    admitted = sorted(n for n, phase in (await phases()).items() if phase == "Admitted")
    (waiting,) = {"one", "two", "three"} - set(admitted)
    held = await job(crds, waiting)
    queued = {c["type"]: c for c in held["status"]["conditions"]}["Queued"]
    assert (held["status"]["phase"], queued["status"]) == ("Pending", "True")
    assert queued["message"] == "queue q: needs 4 devices/gpu, quota leaves room for 0"
    finished = admitted[0]
    await finish_pods(crds, finished)

    async def waiting_admitted() -> bool:
        return (await phases()) == {
            finished: "Succeeded",
            admitted[1]: "Admitted",
            waiting: "Admitted",
        }

    await until(waiting_admitted)

    async def one_cleaned_up() -> bool:
        left = await items(crds, r.RESOURCE_CLAIMS)
        return not any(c["metadata"]["name"].startswith(f"{finished}-") for c in left)

    await until(one_cleaned_up)
    state = controller.caches.state
    assert state.quota.usage("q").get("devices/gpu") == 8
    assert state.violations() == []


async def test_claims_allocated_by_someone_else_are_never_reused(crds: Rest, running) -> None:
    await gpu_cluster(crds, nodes=1, gpus=4, queue_gpus=8)
    await allocated_claim(crds, "theirs", ("n0", "gpu-1"))
    await create(crds, r.GANG_JOBS, gang_job("small", [("w", 3)], gpu=True, priority=10))
    await create(crds, r.GANG_JOBS, gang_job("late", [("w", 1)], gpu=True))
    await running.start()

    async def small_bound() -> bool:
        pods = await items(crds, r.PODS, labelSelector="phalanx.dev/gang=small")
        return len(pods) == 3 and all(p["spec"].get("nodeName") for p in pods)

    await until(small_bound)
    await asyncio.sleep(5)
    ours = [
        c["status"]["allocation"]["devices"]["results"][0]["device"]
        for c in await items(crds, r.RESOURCE_CLAIMS)
        if c["metadata"]["name"] != "theirs"
    ]
    assert sorted(ours) == ["gpu-0", "gpu-2", "gpu-3"]
    late = await job(crds, "late")
    assert late["status"]["phase"] == "Pending"
