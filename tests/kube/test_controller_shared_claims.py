"""A ResourceClaim named by pods of several foreign gangs: allocated once (by the first
gang that names it), shared by the others on its node with every consumer pod in its
reservedFor, as kube-scheduler does, and held as long as any of them still uses it. A
claim named by several pods of one gang: one reservation, its pods on its node."""

from __future__ import annotations

import asyncio

import pytest

from controller.kube import resources as r
from controller.kube.release import release_claim
from controller.kube.rest import Obj, Rest
from tests.kube.controller_cluster import (
    NAMESPACE,
    add_node,
    allocated_claim,
    finish_pods,
    gpu_class,
    gpu_cluster,
    gpu_slice,
    items,
    one_slot_node,
    queue,
    running,
    until,
)
from tests.kube.controller_env import crds, create, emulator, pod, rest
from tests.kube.test_controller_foreign import indexed_job_pod, named_claim, until_bound

__all__ = ["crds", "emulator", "rest", "running"]

pytestmark = pytest.mark.looptime


def sharing_pod(gang: str) -> Obj:
    """The one pod of a one-pod label gang, naming the claim `shared`."""
    pod = indexed_job_pod(gang, 0, 1)
    pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": "shared"}]
    return pod


async def two_gangs_sharing_a_claim(rest: Rest, running) -> object:
    """Two nodes of two GPUs; the claim `shared`; gangs `a` and `b` naming it, bound."""
    await gpu_cluster(rest, nodes=2, gpus=2, queue_gpus=4)
    controller = await running.start()
    await create(rest, r.RESOURCE_CLAIMS, named_claim("shared"))
    for gang in ("a", "b"):
        await create(rest, r.PODS, sharing_pod(gang))
    await until_bound(rest, 2)
    await asyncio.sleep(5)
    return controller


async def claim_reserved_for_every_pod(rest: Rest) -> tuple[Obj, list[Obj]]:
    """The claim `shared` and the pods, once its reservedFor is seen to list every pod."""
    claim = await rest.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    pods = await items(rest, r.PODS)
    reserved = sorted(c["uid"] for c in claim["status"]["reservedFor"])
    assert reserved == sorted(p["metadata"]["uid"] for p in pods)
    return claim, pods


def assert_one_gpu_charged(controller) -> None:
    """The shared claim's one GPU is charged once to the queue, and no invariant broke."""
    state = controller.caches.state
    assert state.quota.usage("q").get("devices/gpu") == 1
    assert state.violations() == []


async def test_a_claim_named_by_two_gangs_is_allocated_once_and_reserved_for_both(
    crds: Rest, running
) -> None:
    controller = await two_gangs_sharing_a_claim(crds, running)

    claim, pods = await claim_reserved_for_every_pod(crds)
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert {p["spec"]["nodeName"] for p in pods} == {result["pool"]}
    assert sorted(controller.caches.state.admitted) == ["gang:default/a", "gang:default/b"]
    assert_one_gpu_charged(controller)


async def test_a_shared_claim_stays_held_while_another_gang_still_uses_it(
    crds: Rest, running
) -> None:
    controller = await two_gangs_sharing_a_claim(crds, running)
    await finish_pods(crds, "a")
    await crds.request("DELETE", r.PODS.path(NAMESPACE, "a-0-x0000"))
    await asyncio.sleep(10)

    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    (b,) = await items(crds, r.PODS)
    assert [c["uid"] for c in claim["status"]["reservedFor"]] == [b["metadata"]["uid"]]
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    device = (result["driver"], result["pool"], result["device"])
    state = controller.caches.state
    assert state.inventory.owners.get(device)
    assert state.violations() == []


async def test_a_restarted_controller_restores_both_gangs_sharing_a_claim(
    crds: Rest, running
) -> None:
    await two_gangs_sharing_a_claim(crds, running)
    await running.crash()
    controller = await running.start()
    await asyncio.sleep(10)

    assert sorted(controller.caches.state.admitted) == ["gang:default/a", "gang:default/b"]
    assert_one_gpu_charged(controller)


async def test_a_gang_waits_for_the_pending_gang_that_names_the_same_unallocated_claim(
    crds: Rest, running
) -> None:
    await gpu_cluster(crds, nodes=1, gpus=2, queue_gpus=2)
    controller = await running.start()
    await create(crds, r.RESOURCE_CLAIMS, named_claim("shared"))
    too_big = sharing_pod("a")
    too_big["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "100"
    await create(crds, r.PODS, too_big)
    await asyncio.sleep(5)
    await create(crds, r.PODS, sharing_pod("b"))
    await asyncio.sleep(5)
    assert controller.caches.foreign.reasons["gang:default/b"] == (
        "waiting for ResourceClaim shared to be allocated for gang gang:default/a"
    )

    await crds.request("DELETE", r.PODS.path(NAMESPACE, "a-0-x0000"))
    await until_bound(crds, 1)
    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    assert claim["status"]["allocation"]["devices"]["results"]


async def test_a_gang_letting_go_of_a_claim_another_gang_uses_leaves_it_allocated(
    crds: Rest, running
) -> None:
    await two_gangs_sharing_a_claim(crds, running)
    await finish_pods(crds, "a")
    await asyncio.sleep(2)  # the resourceclaim controller drops a's pod from reservedFor
    pods = {p["metadata"]["uid"]: p for p in await items(crds, r.PODS)}
    mine = {u for u, p in pods.items() if p["metadata"]["name"].startswith("a-")}
    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))

    def pod_of(consumer: Obj) -> Obj | None:
        return pods.get(str(consumer.get("uid")))

    assert await release_claim(crds, claim, pod_of, delete_it=False, mine=mine)
    after = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    assert after["status"]["allocation"] == claim["status"]["allocation"]
    assert {c["uid"] for c in after["status"]["reservedFor"]} == set(pods) - mine


# --- one claim named by several pods of one gang ---------------------------------------------


def gang_sharing_one_claim(gang: str, size: int) -> list[Obj]:
    """The pods of a label gang, every one naming the claim `shared`."""
    pods = []
    for i in range(size):
        pod = indexed_job_pod(gang, i, size)
        pod["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": "shared"}]
        pods.append(pod)
    return pods


async def one_gang_sharing_a_claim(rest: Rest, running, size: int = 3) -> object:
    """Nodes n0 (room for one pod) and n1, two GPUs each; a gang of `size` pods naming the
    claim `shared`, bound."""
    await create(rest, r.DEVICE_CLASSES, gpu_class())
    for name, pods in (("n0", 1), ("n1", 110)):
        await add_node(rest, name, pods)
        await create(rest, r.RESOURCE_SLICES, gpu_slice(name, 2))
    await create(rest, r.QUEUES, queue(devices__gpu=4))
    controller = await running.start()
    await create(rest, r.RESOURCE_CLAIMS, named_claim("shared"))
    for member in gang_sharing_one_claim("a", size):
        await create(rest, r.PODS, member)
    await until_bound(rest, size)
    await asyncio.sleep(5)
    return controller


async def test_a_claim_named_by_several_pods_of_one_gang_is_allocated_once_for_all(
    crds: Rest, running
) -> None:
    controller = await one_gang_sharing_a_claim(crds, running)

    claim, _ = await claim_reserved_for_every_pod(crds)
    assert len(claim["status"]["allocation"]["devices"]["results"]) == 1
    assert_one_gpu_charged(controller)


async def test_pods_of_one_gang_sharing_a_claim_are_put_on_the_node_of_its_devices(
    crds: Rest, running
) -> None:
    await one_gang_sharing_a_claim(crds, running)

    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    assert {p["spec"]["nodeName"] for p in await items(crds, r.PODS)} == {result["pool"]}


async def test_a_restarted_controller_restores_a_gang_whose_pods_share_a_claim(
    crds: Rest, running
) -> None:
    await one_gang_sharing_a_claim(crds, running)
    await running.crash()
    controller = await running.start()
    await asyncio.sleep(10)

    assert list(controller.caches.state.admitted) == ["gang:default/a"]
    assert_one_gpu_charged(controller)


# --- the reservedFor limit, for a whole gang -------------------------------------------------


def roomy_node(name: str) -> Obj:
    node = one_slot_node(name, pods=1000)
    node["status"]["allocatable"]["cpu"] = "64"
    return node


async def a_roomy_node(rest: Rest) -> None:
    """One node (64 CPUs, 1000 pods, 2 GPUs) and a queue for its GPUs."""
    await create(rest, r.DEVICE_CLASSES, gpu_class())
    await create(rest, r.NODES, roomy_node("n0"))
    await rest.request(
        "PATCH",
        r.NODES.path(name="n0"),
        body={"spec": {"taints": None}},
        content_type="application/merge-patch+json",
    )
    await create(rest, r.RESOURCE_SLICES, gpu_slice("n0", 2))
    await create(rest, r.QUEUES, queue(devices__gpu=2))


async def one_roomy_node(rest: Rest, running) -> object:
    """`a_roomy_node` and the controller on."""
    await a_roomy_node(rest)
    return await running.start()


async def reserved_for_others(rest: Rest, pods: int) -> list[Obj]:
    """The claim `shared` allocated by someone else on n0 and reserved for `pods` running
    pods of theirs; those pods."""
    await allocated_claim(rest, "shared", ("n0", "gpu-0"))
    theirs = []
    for i in range(pods):
        theirs.append(await create(rest, r.PODS, pod(f"theirs-{i}", "n0", cpu="0")))
    claim = await rest.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    claim["status"]["reservedFor"] = [
        {"resource": "pods", "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}
        for p in theirs
    ]
    await rest.request("PUT", r.RESOURCE_CLAIMS.path(NAMESPACE, "shared", "status"), body=claim)
    return theirs


async def test_a_gang_that_would_overfill_a_shared_claims_reserved_for_waits_whole(
    crds: Rest, running
) -> None:
    """250 consumers, and 7 pods of a gang: each pod would fit, the gang does not."""
    controller = await one_roomy_node(crds, running)
    await reserved_for_others(crds, 250)
    for shared_pod in gang_sharing_one_claim("b", 7):
        await create(crds, r.PODS, shared_pod)
    await asyncio.sleep(10)

    assert controller.caches.foreign.reasons["gang:default/b"] == (
        "ResourceClaim shared is reserved for 250 pods and 7 pods of this gang would join "
        "them: 257, over the 256 its reservedFor may hold; waiting for 1 of them to finish"
    )
    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    assert len(claim["status"]["reservedFor"]) == 250
    gang = await items(crds, r.PODS, labelSelector="phalanx.dev/gang=b")
    assert not any(p["spec"].get("nodeName") for p in gang)


async def test_a_gang_waiting_for_room_in_a_claims_reserved_for_is_admitted_once_there_is(
    crds: Rest, running
) -> None:
    await one_roomy_node(crds, running)
    theirs = await reserved_for_others(crds, 250)
    for shared_pod in gang_sharing_one_claim("b", 7):
        await create(crds, r.PODS, shared_pod)
    await asyncio.sleep(5)
    done = theirs[0]
    done["status"] = {"phase": "Succeeded"}
    await crds.request("PUT", r.PODS.path(NAMESPACE, "theirs-0", "status"), body=done)

    async def gang_bound() -> bool:
        gang = await items(crds, r.PODS, labelSelector="phalanx.dev/gang=b")
        return len(gang) == 7 and all(p["spec"].get("nodeName") for p in gang)

    await until(gang_bound)
    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    assert len(claim["status"]["reservedFor"]) == 256


async def test_a_gang_of_more_pods_than_a_reserved_for_holds_says_it_can_never_share_it(
    crds: Rest, running
) -> None:
    controller = await one_roomy_node(crds, running)
    await create(crds, r.RESOURCE_CLAIMS, named_claim("shared"))
    for shared_pod in gang_sharing_one_claim("big", 257):
        await create(crds, r.PODS, shared_pod)
    await asyncio.sleep(10)

    assert controller.caches.foreign.reasons["gang:default/big"] == (
        "ResourceClaim shared is reserved for 0 pods and 257 pods of this gang would join "
        "them: 257, over the 256 its reservedFor may hold; the gang can never share it as it is"
    )
    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    assert not (claim.get("status") or {}).get("allocation")


async def test_two_gangs_that_would_overfill_a_claims_reserved_for_together_are_not_both_admitted(
    crds: Rest, running
) -> None:
    """250 consumers, and two gangs of 4 there before the controller starts: each would
    fit alone, both would not. One is admitted, the other waits for it."""
    await a_roomy_node(crds)
    await reserved_for_others(crds, 250)
    for gang in ("b", "c"):
        for member in gang_sharing_one_claim(gang, 4):
            await create(crds, r.PODS, member)
    controller = await running.start()
    await asyncio.sleep(10)

    claim = await crds.get(r.RESOURCE_CLAIMS.path(NAMESPACE, "shared"))
    assert len(claim["status"]["reservedFor"]) == 254
    reasons = controller.caches.foreign.reasons
    (waiting,) = [g for g in ("gang:default/b", "gang:default/c") if g in reasons]
    assert reasons[waiting] == (
        "ResourceClaim shared is reserved for 254 pods and 4 pods of this gang would join "
        "them: 258, over the 256 its reservedFor may hold; waiting for 2 of them to finish"
    )
