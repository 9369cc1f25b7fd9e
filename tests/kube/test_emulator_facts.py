"""Every row of the maintainers' `kube-api-facts.md` (answers of a real Kubernetes 1.36 API
server that surprise people), each as its own test against the emulator. The emulator runs
as the recording server did (no controller-manager) except where a row is about one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube.client import (
    CLAIM_FINALIZER,
    MERGE,
    Client,
    Obj,
    allocation,
    claim,
    configmap,
    namespace,
    pod,
    running,
    schedule,
)
from tests.kube.shared import shared_path

pytestmark = pytest.mark.looptime

FACTS = shared_path("kube-api-facts.md")
NS = "/api/v1/namespaces/f"
DRA = "/apis/resource.k8s.io/v1"
CLAIMS = f"{DRA}/namespaces/f/resourceclaims"
PODGROUPS = "/apis/scheduling.k8s.io/v1alpha2/namespaces/f/podgroups"
STRATEGIC = "application/strategic-merge-patch+json"


async def _setup(client: Client, account: bool) -> None:
    await client.ok("POST", "/api/v1/namespaces", namespace("f"))
    if account:
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
        await client.ok("POST", f"{NS}/serviceaccounts", sa)


@pytest.fixture
async def kube() -> AsyncIterator[Client]:
    """The recording server's setup: a namespace with its default ServiceAccount."""
    async with running() as client:
        await _setup(client, account=True)
        yield client


def device_class(expression: str) -> Obj:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": "gpu"},
        "spec": {"selectors": [{"cel": {"expression": expression}}]},
    }


async def new_claim(kube: Client, name: str = "c1") -> Obj:
    return await kube.ok("POST", CLAIMS, claim(name))


async def patch_status(kube: Client, name: str, status: Obj, **meta: Any) -> tuple[int, Any]:
    body: Obj = {"status": status}
    if meta:
        body["metadata"] = meta
    return await kube.call("PATCH", f"{CLAIMS}/{name}/status", body, content_type=MERGE)


def reservation(pod_name: str = "p1", uid: str = "0a1b2c3d-0000-4000-8000-000000000001") -> Obj:
    return {"resource": "pods", "name": pod_name, "uid": uid}


def test_every_table_row_has_a_test() -> None:
    rows = [
        line
        for line in FACTS.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| action") and "---" not in line
    ]
    tests = [
        name
        for name in globals()
        if name.startswith("test_") and name != "test_every_table_row_has_a_test"
    ]
    assert len(rows) == len(tests), f"{len(rows)} rows in {FACTS.name}, {len(tests)} tests"


# --- DRA (resource.k8s.io/v1) ---------------------------------------------------------------


async def test_a_device_class_selector_that_does_not_compile_is_invalid(kube: Client) -> None:
    status, answer = await kube.call(
        "POST", f"{DRA}/deviceclasses", device_class("device.driver ==")
    )
    assert (status, answer["reason"]) == (422, "Invalid")
    assert answer["details"]["causes"][0]["field"] == "spec.selectors[0].cel.expression"
    assert "compilation failed" in answer["message"]


async def test_a_device_class_selector_that_is_not_boolean_is_invalid(kube: Client) -> None:
    status, answer = await kube.call("POST", f"{DRA}/deviceclasses", device_class("device.driver"))
    assert status == 422
    assert "must evaluate to bool or the unknown type, not string" in answer["message"]


async def test_a_status_patch_through_the_main_resource_is_silently_dropped(kube: Client) -> None:
    await new_claim(kube)
    status, answer = await kube.call(
        "PATCH", f"{CLAIMS}/c1", {"status": {"allocation": allocation("n1")}}, content_type=MERGE
    )
    assert (status, answer.get("status")) == (200, {})


async def test_reserved_for_without_an_allocation_is_invalid(kube: Client) -> None:
    await new_claim(kube)
    status, answer = await patch_status(kube, "c1", {"reservedFor": [reservation()]})
    assert status == 422
    assert "may not be specified when `allocated` is not set" in answer["message"]


async def test_allocation_and_reservation_in_one_status_patch_are_accepted(kube: Client) -> None:
    await new_claim(kube)
    status, answer = await patch_status(
        kube, "c1", {"allocation": allocation("n1"), "reservedFor": [reservation()]}
    )
    assert status == 200 and answer["status"]["reservedFor"] == [reservation()]


async def test_an_allocation_is_immutable_once_set(kube: Client) -> None:
    await new_claim(kube)
    await patch_status(kube, "c1", {"allocation": allocation("n1")})
    status, answer = await patch_status(kube, "c1", {"allocation": allocation("n2")})
    assert (status, answer["reason"]) == (422, "Invalid")
    assert "immutable" in answer["message"]


async def test_an_allocation_cannot_be_cleared_while_reserved(kube: Client) -> None:
    await new_claim(kube)
    await patch_status(kube, "c1", {"allocation": allocation("n1"), "reservedFor": [reservation()]})
    status, answer = await patch_status(kube, "c1", {"allocation": None})
    assert status == 422
    assert "may not be specified when `allocated` is not set" in answer["message"]


async def test_a_status_patch_with_a_stale_resource_version_conflicts(kube: Client) -> None:
    created = await new_claim(kube)
    await patch_status(kube, "c1", {"allocation": allocation("n1")})
    status, answer = await patch_status(
        kube,
        "c1",
        {"reservedFor": [reservation()]},
        resourceVersion=created["metadata"]["resourceVersion"],
    )
    assert (status, answer["reason"]) == (409, "Conflict")
    assert "the object has been modified" in answer["message"]


async def test_finalizers_in_a_claim_status_patch_are_ignored(kube: Client) -> None:
    await new_claim(kube)
    status, answer = await patch_status(
        kube, "c1", {"allocation": allocation("n1")}, finalizers=["example.com/keep"]
    )
    assert status == 200 and answer["status"]["allocation"] == allocation("n1")
    assert "finalizers" not in answer["metadata"]


async def test_the_scheduler_write_sequence_and_the_claim_controller_release() -> None:
    async with running(controllers=True) as kube:
        await _setup(kube, account=False)
        await new_claim(kube)
        spec = {"resourceClaims": [{"name": "g", "resourceClaimName": "c1"}]}
        await kube.ok("POST", f"{NS}/pods", pod("p1", **spec))
        await schedule(kube, "p1", "c1", namespace="f")
        held = await kube.ok("GET", f"{CLAIMS}/c1")
        assert held["metadata"]["finalizers"] == [CLAIM_FINALIZER]
        await kube.ok("DELETE", f"{NS}/pods/p1", query={"gracePeriodSeconds": "0"})
        assert kube.emulator.controllers is not None
        await kube.emulator.controllers.idle()
        released = await kube.ok("GET", f"{CLAIMS}/c1")
        assert released["status"] == {} and "finalizers" not in released["metadata"]


async def test_allocating_a_device_no_slice_has_is_accepted(kube: Client) -> None:
    await new_claim(kube)
    made_up = allocation("nowhere")
    made_up["devices"]["results"][0]["device"] = "no-such-device"
    status, _ = await patch_status(kube, "c1", {"allocation": made_up})
    assert status == 200


async def test_allocating_a_device_twice_is_accepted(kube: Client) -> None:
    await new_claim(kube, "c1")
    await new_claim(kube, "c2")
    first, _ = await patch_status(kube, "c1", {"allocation": allocation("n1")})
    second, _ = await patch_status(kube, "c2", {"allocation": allocation("n1")})
    assert (first, second) == (200, 200)


# --- Pods and binding -----------------------------------------------------------------------


async def test_a_pod_without_a_service_account_is_forbidden_after_a_second_and_a_half() -> None:
    async with running() as kube:
        await _setup(kube, account=False)
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, answer = await kube.call(
            "POST", f"{NS}/pods", pod("p1", automountServiceAccountToken=False)
        )
        assert (status, answer["reason"]) == (403, "Forbidden")
        assert loop.time() - started == pytest.approx(1.5, abs=0.01)


async def test_creating_an_object_with_a_resource_version_is_an_internal_error(
    kube: Client,
) -> None:
    status, answer = await kube.call(
        "POST", f"{NS}/configmaps", configmap("a", resourceVersion="1")
    )
    assert (status, answer["message"]) == (
        500,
        "resourceVersion should not be set on objects to be created",
    )


async def test_binding_with_an_empty_target_is_500_and_gated_or_terminating_pods_409(
    kube: Client,
) -> None:
    await kube.ok("POST", f"{NS}/pods", pod("plain"))
    await kube.ok("POST", f"{NS}/pods", pod("gated", schedulingGates=[{"name": "example.com/g"}]))
    held = pod("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    await kube.ok("POST", f"{NS}/pods", held)
    await kube.ok("DELETE", f"{NS}/pods/held")
    target = {"kind": "Node", "name": "n1"}
    answers = [
        await kube.call("POST", f"{NS}/pods/{name}/binding", {"target": t})
        for name, t in (("plain", {}), ("gated", target), ("held", target))
    ]
    assert [s for s, _ in answers] == [500, 409, 409]
    assert "target.name: Required value" in answers[0][1]["message"]
    assert "non-empty .spec.schedulingGates" in answers[1][1]["message"]
    assert "is being deleted, cannot be assigned to a host" in answers[2][1]["message"]


async def test_a_bound_pod_stays_terminating_until_deleted_with_grace_zero(kube: Client) -> None:
    await kube.ok("POST", f"{NS}/pods", pod("p1", nodeName="n1"))
    await kube.ok("DELETE", f"{NS}/pods/p1")
    terminating = await kube.ok("GET", f"{NS}/pods/p1")
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    await kube.ok("DELETE", f"{NS}/pods/p1", query={"gracePeriodSeconds": "0"})
    assert await kube.get(f"{NS}/pods/p1") is None


async def test_delete_answers_with_the_pod_but_a_status_for_nodes_and_custom_resources(
    kube: Client,
) -> None:
    repo = Path(__file__).resolve().parents[2]
    await kube.emulator.load(repo / "tests" / "fixtures" / "widgets.tx.example.com.yaml")
    widget = {
        "apiVersion": "tx.example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 1, "color": "red"},
    }
    widgets = "/apis/tx.example.com/v1/namespaces/f/widgets"
    await kube.ok("POST", widgets, widget)
    await kube.ok("POST", f"{NS}/pods", pod("p1"))
    await kube.ok(
        "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    )
    kinds = [
        (await kube.ok("DELETE", path))["kind"]
        for path in (f"{NS}/pods/p1", "/api/v1/nodes/n1", f"{widgets}/w1")
    ]
    assert kinds == ["Pod", "Status", "Status"]


async def test_binding_a_pod_answers_201(kube: Client) -> None:
    await kube.ok("POST", f"{NS}/pods", pod("p1"))
    status, answer = await kube.call(
        "POST", f"{NS}/pods/p1/binding", {"target": {"kind": "Node", "name": "n1"}}
    )
    assert (status, answer["status"]) == (201, "Success")


async def test_binding_a_pod_again_conflicts(kube: Client) -> None:
    await kube.ok("POST", f"{NS}/pods", pod("p1"))
    target = {"target": {"kind": "Node", "name": "n1"}}
    await kube.ok("POST", f"{NS}/pods/p1/binding", target)
    status, answer = await kube.call("POST", f"{NS}/pods/p1/binding", target)
    assert (status, answer["reason"]) == (409, "Conflict")
    assert 'pod p1 is already assigned to node "n1"' in answer["message"]


async def test_binding_a_missing_pod_is_not_found(kube: Client) -> None:
    status, _ = await kube.call(
        "POST", f"{NS}/pods/ghost/binding", {"target": {"kind": "Node", "name": "n1"}}
    )
    assert status == 404


async def test_binding_to_a_node_that_does_not_exist_is_accepted(kube: Client) -> None:
    await kube.ok("POST", f"{NS}/pods", pod("p1"))
    status, _ = await kube.call(
        "POST", f"{NS}/pods/p1/binding", {"target": {"kind": "Node", "name": "no-such-node"}}
    )
    assert status == 201
    assert (await kube.ok("GET", f"{NS}/pods/p1"))["spec"]["nodeName"] == "no-such-node"


async def test_a_node_created_with_only_status_gets_the_not_ready_taint(kube: Client) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "status": {"capacity": {"cpu": "4"}, "allocatable": {"cpu": "4"}},
    }
    created = await kube.ok("POST", "/api/v1/nodes", node)
    assert created["spec"]["taints"] == [
        {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
    ]


# --- Lists and watches ----------------------------------------------------------------------


async def make_configmaps(kube: Client, *names: str) -> list[Obj]:
    return [await kube.ok("POST", f"{NS}/configmaps", configmap(n)) for n in names]


async def test_a_limited_list_has_a_continue_token_and_a_resource_version(kube: Client) -> None:
    await make_configmaps(kube, "a", "b")
    listed = await kube.ok("GET", f"{NS}/configmaps", query={"limit": "1"})
    assert len(listed["items"]) == 1
    assert listed["metadata"]["continue"] and listed["metadata"]["resourceVersion"]


async def test_a_malformed_label_selector_is_a_bad_request(kube: Client) -> None:
    status, answer = await kube.call("GET", f"{NS}/pods", query={"labelSelector": "a in (b"})
    assert (status, answer["reason"]) == (400, "BadRequest")
    assert "unable to parse requirement" in answer["message"]


async def test_an_idle_watch_with_bookmarks_gets_no_event_within_two_seconds(
    kube: Client,
) -> None:
    listed = await kube.ok("GET", f"{NS}/configmaps")
    query = {
        "allowWatchBookmarks": "true",
        "resourceVersion": listed["metadata"]["resourceVersion"],
        "timeoutSeconds": "2",
    }
    assert await kube.watch(f"{NS}/configmaps", query) == (200, [])


async def test_initial_events_end_with_an_annotated_bookmark(kube: Client) -> None:
    await make_configmaps(kube, "a", "b")
    query = {
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "1",
    }
    _, events = await kube.watch(f"{NS}/configmaps", query)
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    annotations = events[-1]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


async def test_an_exact_list_before_the_last_compaction_is_expired(kube: Client) -> None:
    first, _ = await make_configmaps(kube, "a", "b")
    kube.emulator.compact()
    status, answer = await kube.call(
        "GET",
        f"{NS}/configmaps",
        query={
            "resourceVersion": first["metadata"]["resourceVersion"],
            "resourceVersionMatch": "Exact",
        },
    )
    assert (status, answer["reason"]) == (410, "Expired")
    assert answer["message"] == "The resourceVersion for the provided list is too old."


async def test_a_watch_from_before_the_window_gets_200_then_an_error_410(kube: Client) -> None:
    first, _ = await make_configmaps(kube, "a", "b")
    kube.emulator.forget_watch_window()
    query = {"resourceVersion": first["metadata"]["resourceVersion"], "timeoutSeconds": "5"}
    status, events = await kube.watch(f"{NS}/configmaps", query)
    assert status == 200
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [
        ("ERROR", 410, "Expired")
    ]


async def test_an_object_leaving_a_label_selector_is_deleted_with_its_old_labels(
    kube: Client,
) -> None:
    (created,) = [await kube.ok("POST", f"{NS}/configmaps", configmap("a", labels={"app": "x"}))]
    query = {
        "labelSelector": "app=x",
        "resourceVersion": created["metadata"]["resourceVersion"],
        "timeoutSeconds": "1",
    }
    changed = await kube.ok(
        "PATCH", f"{NS}/configmaps/a", {"metadata": {"labels": {"app": "y"}}}, content_type=MERGE
    )
    _, events = await kube.watch(f"{NS}/configmaps", query)
    assert [(e["type"], e["object"]["metadata"]["labels"]) for e in events] == [
        ("DELETED", {"app": "x"})
    ]
    assert (
        events[0]["object"]["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]
    )


async def test_a_watch_from_a_compacted_version_is_still_served_from_the_cache(
    kube: Client,
) -> None:
    first, _ = await make_configmaps(kube, "a", "b")
    kube.emulator.compact()
    query = {"resourceVersion": first["metadata"]["resourceVersion"], "timeoutSeconds": "1"}
    status, events = await kube.watch(f"{NS}/configmaps", query)
    assert (status, [(e["type"], e["object"]["metadata"]["name"]) for e in events]) == (
        200,
        [("ADDED", "b")],
    )


async def test_a_list_at_a_future_version_times_out_and_a_watch_there_is_silent(
    kube: Client,
) -> None:
    future = str(kube.emulator.store.rv + 100)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, answer = await kube.call("GET", f"{NS}/configmaps", query={"resourceVersion": future})
    assert (status, answer["reason"]) == (504, "Timeout")
    assert loop.time() - started == pytest.approx(3.0, abs=0.01)
    await make_configmaps(kube, "a")
    query = {"resourceVersion": future, "timeoutSeconds": "2"}
    assert await kube.watch(f"{NS}/configmaps", query) == (200, [])


async def test_a_limit_with_resource_version_zero_is_ignored(kube: Client) -> None:
    await make_configmaps(kube, "a", "b", "c")
    listed = await kube.ok("GET", f"{NS}/configmaps", query={"limit": "1", "resourceVersion": "0"})
    assert len(listed["items"]) == 3 and "continue" not in listed["metadata"]


@pytest.mark.parametrize("spelling", ["true", "True"])
async def test_boolean_query_parameters_accept_both_spellings(kube: Client, spelling: str) -> None:
    await make_configmaps(kube, "a")
    query = {"resourceVersion": "0", "timeoutSeconds": "1", "allowWatchBookmarks": spelling}
    async with kube.session.get(
        f"{NS}/configmaps", params={"watch": spelling, **query}
    ) as response:
        events = [json.loads(line) async for line in response.content if line.strip()]
    assert response.status == 200
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]


# --- Leases, PodGroups ----------------------------------------------------------------------


async def test_lease_times_take_exactly_six_fraction_digits(kube: Client) -> None:
    async def create(name: str, stamp: str) -> int:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": "a", "renewTime": stamp},
        }
        status, _ = await kube.call(
            "POST", "/apis/coordination.k8s.io/v1/namespaces/f/leases", lease
        )
        return status

    stamps = {
        "micro": "2026-12-02T05:00:00.123456Z",
        "milli": "2026-12-02T05:00:00.123Z",
        "none": "2026-12-02T05:00:00Z",
        "nano": "2026-12-02T05:00:00.123456789Z",
    }
    assert {name: await create(name, stamp) for name, stamp in stamps.items()} == {
        "micro": 201,
        "milli": 400,
        "none": 400,
        "nano": 400,
    }


async def test_a_podgroup_gets_the_protection_finalizer_and_keeps_its_policy(
    kube: Client,
) -> None:
    def group(name: str, min_count: int) -> Obj:
        return {
            "apiVersion": "scheduling.k8s.io/v1alpha2",
            "kind": "PodGroup",
            "metadata": {"name": name},
            "spec": {"schedulingPolicy": {"gang": {"minCount": min_count}}},
        }

    created = await kube.ok("POST", PODGROUPS, group("g", 2))
    assert created["metadata"]["finalizers"] == ["scheduling.k8s.io/podgroup-protection"]
    status, answer = await kube.call(
        "PATCH",
        f"{PODGROUPS}/g",
        {"spec": {"schedulingPolicy": {"gang": {"minCount": 3}}}},
        content_type=MERGE,
    )
    assert status == 422 and "immutable" in answer["message"]
    status, answer = await kube.call("POST", PODGROUPS, group("zero", 0))
    assert status == 422 and "Required value" in answer["message"]
