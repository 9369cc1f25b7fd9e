"""The controllers `Emulator(controllers=True)` runs as a controller-manager would: the
resourceclaim controller, garbage collection, namespace deletion, PodGroup protection and
the node lifecycle taint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from emulator.claims import FINALIZER, POD_CLAIM_ANNOTATION
from tests.kube.client import (
    MERGE,
    Client,
    Obj,
    allocation,
    configmap,
    namespace,
    pod,
    running,
    schedule,
)

pytestmark = pytest.mark.looptime

NS = "/api/v1/namespaces/t"
CLAIMS = "/apis/resource.k8s.io/v1/namespaces/t/resourceclaims"
TEMPLATES = "/apis/resource.k8s.io/v1/namespaces/t/resourceclaimtemplates"
PODGROUPS = "/apis/scheduling.k8s.io/v1alpha2/namespaces/t/podgroups"


@pytest.fixture
async def kube() -> AsyncIterator[Client]:
    async with running(controllers=True) as client:
        await client.ok("POST", "/api/v1/namespaces", namespace("t"))
        yield client


async def settled(kube: Client) -> None:
    assert kube.emulator.controllers is not None
    await kube.emulator.controllers.idle()


def template(name: str = "gpu") -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {
            "metadata": {"labels": {"made-from": name}},
            "spec": {
                "devices": {"requests": [{"name": "g", "exactly": {"deviceClassName": "gpu"}}]}
            },
        },
    }


def claim_pod(name: str, template_name: str = "gpu") -> Obj:
    return pod(name, resourceClaims=[{"name": "accel", "resourceClaimTemplateName": template_name}])


async def generated_claim(kube: Client, pod_name: str) -> Obj:
    await settled(kube)
    stored = await kube.ok("GET", f"{NS}/pods/{pod_name}")
    statuses = stored["status"]["resourceClaimStatuses"]
    assert [s["name"] for s in statuses] == ["accel"]
    return await kube.ok("GET", f"{CLAIMS}/{statuses[0]['resourceClaimName']}")


# --- the resourceclaim controller ------------------------------------------------------------


async def test_a_pod_claim_template_becomes_a_claim_owned_by_the_pod(kube: Client) -> None:
    await kube.ok("POST", TEMPLATES, template())
    created = await kube.ok("POST", f"{NS}/pods", claim_pod("p1"))
    claim = await generated_claim(kube, "p1")
    meta = claim["metadata"]
    assert meta["name"].startswith("p1-accel-") and len(meta["name"]) == len("p1-accel-") + 5
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "p1",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["annotations"] == {POD_CLAIM_ANNOTATION: "accel"}
    assert meta["labels"] == {"made-from": "gpu"}
    assert claim["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] == "gpu"


async def test_a_long_pod_and_claim_name_are_both_shortened_in_proportion() -> None:
    from emulator.claims import generate_name

    name = generate_name("p" * 60, "c" * 30)
    assert len(name) <= 57 and name == "p" * 37 + "-" + "c" * 18


async def test_a_missing_template_is_an_event_until_the_template_appears(kube: Client) -> None:
    await kube.ok("POST", f"{NS}/pods", claim_pod("p1", "later"))
    await settled(kube)
    events = (await kube.ok("GET", f"{NS}/events"))["items"]
    assert [(e["reason"], e["involvedObject"]["name"]) for e in events] == [
        ("FailedResourceClaimCreation", "p1")
    ]
    assert "later" in events[0]["message"]
    await kube.ok("POST", TEMPLATES, template("later"))
    claim = await generated_claim(kube, "p1")
    assert claim["metadata"]["labels"] == {"made-from": "later"}


async def test_a_claim_whose_reserving_pod_is_deleted_is_deallocated_and_released(
    kube: Client,
) -> None:
    await kube.ok("POST", TEMPLATES, template())
    await kube.ok("POST", f"{NS}/pods", claim_pod("p1"))
    claim = await generated_claim(kube, "p1")
    name = claim["metadata"]["name"]
    await schedule(kube, "p1", name)
    await kube.ok("DELETE", f"{NS}/pods/p1", query={"gracePeriodSeconds": "0"})
    await settled(kube)
    assert await kube.get(f"{CLAIMS}/{name}") is None


async def test_a_claim_reserved_for_a_finished_pod_is_deallocated_then_released(
    kube: Client,
) -> None:
    await kube.ok(
        "POST",
        CLAIMS,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "shared"},
            "spec": template()["spec"]["spec"],
        },
    )
    await kube.ok(
        "POST",
        f"{NS}/pods",
        pod("p1", resourceClaims=[{"name": "accel", "resourceClaimName": "shared"}]),
    )
    await schedule(kube, "p1", "shared")
    await kube.ok(
        "PATCH", f"{NS}/pods/p1/status", {"status": {"phase": "Succeeded"}}, content_type=MERGE
    )
    await settled(kube)
    claim = await kube.ok("GET", f"{CLAIMS}/shared")
    assert claim["status"] == {}
    assert FINALIZER not in (claim["metadata"].get("finalizers") or [])


async def test_a_deleted_claim_that_nothing_reserves_is_deallocated_and_goes(kube: Client) -> None:
    await kube.ok(
        "POST",
        CLAIMS,
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "c1", "finalizers": [FINALIZER]},
            "spec": template()["spec"]["spec"],
        },
    )
    claim = await kube.ok("GET", f"{CLAIMS}/c1")
    claim["status"] = {"allocation": allocation("n1")}
    await kube.ok("PUT", f"{CLAIMS}/c1/status", claim)
    await kube.ok("DELETE", f"{CLAIMS}/c1")
    await settled(kube)
    assert await kube.get(f"{CLAIMS}/c1") is None


async def test_a_generated_claim_is_deleted_once_its_pod_is_done(kube: Client) -> None:
    await kube.ok("POST", TEMPLATES, template())
    await kube.ok("POST", f"{NS}/pods", claim_pod("p1"))
    name = (await generated_claim(kube, "p1"))["metadata"]["name"]
    await kube.ok(
        "PATCH", f"{NS}/pods/p1/status", {"status": {"phase": "Failed"}}, content_type=MERGE
    )
    await settled(kube)
    assert await kube.get(f"{CLAIMS}/{name}") is None


# --- garbage collection ----------------------------------------------------------------------


async def owner_and_dependent(kube: Client, **extra_owner: Any) -> tuple[Obj, str]:
    owner = await kube.ok("POST", f"{NS}/configmaps", configmap("owner"))
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    await kube.ok(
        "POST", f"{NS}/configmaps", configmap("dep", ownerReferences=[{**ref, **extra_owner}])
    )
    return owner, f"{NS}/configmaps/dep"


async def test_deleting_an_owner_deletes_its_dependents_in_the_background(kube: Client) -> None:
    _, dependent = await owner_and_dependent(kube)
    await kube.ok("DELETE", f"{NS}/configmaps/owner")
    await settled(kube)
    assert await kube.get(dependent) is None


async def test_a_dependent_with_another_live_owner_only_loses_the_dangling_reference(
    kube: Client,
) -> None:
    owner, _ = await owner_and_dependent(kube)
    other = await kube.ok("POST", f"{NS}/configmaps", configmap("other"))
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": o["metadata"]["uid"]}
        for n, o in (("owner", owner), ("other", other))
    ]
    await kube.ok("POST", f"{NS}/configmaps", configmap("shared", ownerReferences=refs))
    await kube.ok("DELETE", f"{NS}/configmaps/owner")
    await settled(kube)
    kept = await kube.ok("GET", f"{NS}/configmaps/shared")
    assert [r["name"] for r in kept["metadata"]["ownerReferences"]] == ["other"]


async def test_a_dependent_whose_owner_never_existed_is_deleted(kube: Client) -> None:
    ghost = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "ghost",
        "uid": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
    }
    await kube.ok("POST", f"{NS}/configmaps", configmap("dep", ownerReferences=[ghost]))
    await settled(kube)
    assert await kube.get(f"{NS}/configmaps/dep") is None


async def test_foreground_deletion_removes_the_dependents_before_the_owner(kube: Client) -> None:
    _, dependent = await owner_and_dependent(kube, blockOwnerDeletion=True)
    answer = await kube.ok(
        "DELETE", f"{NS}/configmaps/owner", query={"propagationPolicy": "Foreground"}
    )
    assert answer["metadata"]["finalizers"] == ["foregroundDeletion"]
    await settled(kube)
    assert (await kube.get(dependent), await kube.get(f"{NS}/configmaps/owner")) == (None, None)


async def test_orphan_deletion_keeps_the_dependents_without_the_owner_reference(
    kube: Client,
) -> None:
    _, dependent = await owner_and_dependent(kube)
    await kube.ok("DELETE", f"{NS}/configmaps/owner", query={"propagationPolicy": "Orphan"})
    await settled(kube)
    kept = await kube.ok("GET", dependent)
    assert "ownerReferences" not in kept["metadata"]
    assert await kube.get(f"{NS}/configmaps/owner") is None


# --- namespaces, PodGroups, nodes ------------------------------------------------------------


async def test_a_deleted_namespace_is_emptied_then_removed(kube: Client) -> None:
    await kube.ok("POST", f"{NS}/configmaps", configmap("a"))
    await kube.ok("POST", f"{NS}/pods", pod("p1"))
    marked = await kube.ok("DELETE", NS)
    assert marked["status"]["phase"] == "Terminating"
    await settled(kube)
    assert await kube.get(NS) is None
    assert (await kube.ok("GET", "/api/v1/configmaps"))["items"] == []


async def test_a_namespace_waits_for_its_terminating_pods(kube: Client) -> None:
    await kube.ok("POST", f"{NS}/pods", pod("p1", nodeName="n1"))
    await kube.ok("DELETE", NS)
    await settled(kube)
    assert (await kube.ok("GET", NS))["spec"]["finalizers"] == ["kubernetes"]
    await kube.ok("DELETE", f"{NS}/pods/p1", query={"gracePeriodSeconds": "0"})
    await settled(kube)
    assert await kube.get(NS) is None


def podgroup(name: str) -> Obj:
    return {
        "apiVersion": "scheduling.k8s.io/v1alpha2",
        "kind": "PodGroup",
        "metadata": {"name": name},
        "spec": {"schedulingPolicy": {"gang": {"minCount": 1}}},
    }


async def test_a_deleted_podgroup_goes_once_no_active_pod_names_it(kube: Client) -> None:
    await kube.ok("POST", PODGROUPS, podgroup("g"))
    await kube.ok("POST", f"{NS}/pods", pod("p1", schedulingGroup={"podGroupName": "g"}))
    await kube.ok("DELETE", f"{PODGROUPS}/g")
    await settled(kube)
    assert await kube.get(f"{PODGROUPS}/g") is not None
    await kube.ok(
        "PATCH", f"{NS}/pods/p1/status", {"status": {"phase": "Succeeded"}}, content_type=MERGE
    )
    await settled(kube)
    assert await kube.get(f"{PODGROUPS}/g") is None


async def test_a_node_loses_the_not_ready_taint_once_ready_and_gets_it_back(kube: Client) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    await kube.ok("POST", "/api/v1/nodes", node)

    async def set_ready(status: str) -> list[Obj]:
        condition = {"type": "Ready", "status": status, "reason": "Test"}
        await kube.ok(
            "PATCH",
            "/api/v1/nodes/n1/status",
            {"status": {"conditions": [condition]}},
            content_type="application/strategic-merge-patch+json",
        )
        await settled(kube)
        return (await kube.ok("GET", "/api/v1/nodes/n1"))["spec"].get("taints", [])

    assert await set_ready("True") == []
    assert [t["key"] for t in await set_ready("False")] == ["node.kubernetes.io/not-ready"]
    assert [t["key"] for t in await set_ready("Unknown")] == ["node.kubernetes.io/unreachable"]
