"""API objects (plain dicts) to engine types and back, without HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from controller.engine.errors import InvalidInput
from controller.engine.model import (
    AllocationMode,
    DeviceRequest,
    MatchAttribute,
    Taint,
    Toleration,
    Version,
)
from controller.engine.reservation import (
    ClaimAllocation,
    DeviceAllocation,
    PodPlacement,
    Reservation,
)
from controller.kube import translate

GIB = 2**30


def node_obj(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "7500m", "memory": "16Gi", "pods": "110", "gpu.io/x": "2"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    for key, value in over.items():
        obj[key] = {**obj.get(key, {}), **value}
    return obj


def test_a_node_has_allocatable_in_engine_units_and_its_labels_and_name_label() -> None:
    n = translate.node(node_obj())
    assert (n.name, dict(n.allocatable), dict(n.labels), n.taints, n.unschedulable) == (
        "n1",
        {"cpu": 7500, "memory": 16 * GIB, "pods": 110, "gpu.io/x": 2},
        {"zone": "a", translate.NODE_NAME_LABEL: "n1"},
        (),
        False,
    )


def test_a_cordoned_tainted_node_keeps_both() -> None:
    n = translate.node(
        node_obj(spec={"unschedulable": True, "taints": [{"key": "k", "effect": "NoExecute"}]})
    )
    assert (n.unschedulable, n.taints) == (True, (Taint("k", "", "NoExecute"),))


@pytest.mark.parametrize("status", ["False", "Unknown"])
def test_a_node_not_ready_gets_the_not_ready_taint(status: str) -> None:
    n = translate.node(node_obj(status={"conditions": [{"type": "Ready", "status": status}]}))
    assert n.taints == (translate.NOT_READY_TAINT,)


@pytest.mark.parametrize(
    ("over", "where"),
    [
        ({"status": {"allocatable": {"cpu": "lots"}}}, "Node n1: status.allocatable[cpu]"),
        ({"spec": {"taints": [{"effect": "NoSchedule"}]}}, "Node n1: spec.taints[0]"),
        ({"spec": {"taints": "k=v"}}, "Node n1: spec.taints"),
    ],
)
def test_a_bad_node_names_the_field(over: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate.node(node_obj(**over))
    assert caught.value.where == where


def slice_obj(**spec: Any) -> dict[str, Any]:
    base = {
        "driver": "gpu.io",
        "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
        "nodeName": "n1",
        "devices": [
            {
                "name": "gpu-0",
                "attributes": {
                    "index": {"int": 0},
                    "model": {"string": "h100"},
                    "nvlink": {"bool": True},
                    "driverVersion": {"version": "1.2.3"},
                    "other.io/rack": {"string": "r1"},
                },
                "capacity": {"memory": {"value": "80Gi"}},
            }
        ],
    }
    return {"metadata": {"name": "s1"}, "spec": {**base, **spec}}


def test_a_slice_gives_devices_with_typed_qualified_attributes() -> None:
    rs = translate.resource_slice(slice_obj())
    (d,) = rs.devices
    assert (rs.name, rs.driver, rs.pool, rs.node, d.key) == (
        "s1",
        "gpu.io",
        "n1",
        "n1",
        ("gpu.io", "n1", "gpu-0"),
    )
    assert dict(d.attributes) == {
        "gpu.io/index": 0,
        "gpu.io/model": "h100",
        "gpu.io/nvlink": True,
        "gpu.io/driverVersion": Version("1.2.3"),
        "other.io/rack": "r1",
    }
    assert dict(d.capacity) == {"gpu.io/memory": "80Gi"}


def test_an_all_nodes_slice_has_devices_on_no_node() -> None:
    rs = translate.resource_slice(slice_obj(nodeName=None, allNodes=True))
    assert (rs.node, rs.devices[0].node) == (None, None)


def test_a_shareable_device_is_marked() -> None:
    spec = slice_obj()["spec"]
    spec["devices"][0]["allowMultipleAllocations"] = True
    assert translate.resource_slice(slice_obj(devices=spec["devices"])).devices[0].shareable


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"nodeName": None, "nodeSelector": {}}, "ResourceSlice s1: spec"),
        (
            {"devices": [{"name": "d", "attributes": {"x": {"int": "1"}}}]},
            "ResourceSlice s1: spec.devices[0].attributes[x].int",
        ),
        (
            {"devices": [{"name": "d", "attributes": {"x": {"float": 1.0}}}]},
            "ResourceSlice s1: spec.devices[0].attributes[x]",
        ),
        ({"devices": [{"name": ""}]}, "ResourceSlice s1: spec.devices[0]"),
    ],
)
def test_a_bad_slice_names_the_field(spec: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate.resource_slice(slice_obj(**spec))
    assert caught.value.where == where


def test_a_device_class_keeps_its_cel_selectors() -> None:
    dc = translate.device_class(
        {
            "metadata": {"name": "gpu"},
            "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.io'"}}]},
        }
    )
    assert (dc.name, dc.selectors) == ("gpu", ("device.driver == 'gpu.io'",))


def test_a_device_class_selector_without_expression_is_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        translate.device_class({"metadata": {"name": "gpu"}, "spec": {"selectors": [{"cel": {}}]}})
    assert caught.value.where == "DeviceClass gpu: spec.selectors[0].cel.expression"


def claim_obj(results: list[dict[str, Any]] | None) -> dict[str, Any]:
    status = {} if results is None else {"allocation": {"devices": {"results": results}}}
    return {"metadata": {"name": "c", "namespace": "ns"}, "status": status}


def test_an_allocated_claim_names_its_devices() -> None:
    results = [{"request": "r", "driver": "gpu.io", "pool": "n1", "device": "gpu-0"}]
    assert translate.claim_devices(claim_obj(results)) == (("gpu.io", "n1", "gpu-0"),)


def test_an_unallocated_claim_holds_nothing() -> None:
    assert translate.claim_devices(claim_obj(None)) == ()


def test_a_claim_result_without_a_device_is_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        translate.claim_devices(claim_obj([{"request": "r", "driver": "gpu.io", "pool": "p"}]))
    assert caught.value.where == "ResourceClaim ns/c: status.allocation.devices.results[0]"


def test_claim_spec_reads_exactly_first_available_and_constraints() -> None:
    spec = translate.claim_spec(
        {
            "requests": [
                {"name": "a", "exactly": {"deviceClassName": "gpu", "count": 2}},
                {
                    "name": "b",
                    "firstAvailable": [
                        {"name": "big", "deviceClassName": "gpu", "allocationMode": "All"},
                        {"name": "small", "deviceClassName": "gpu"},
                    ],
                },
            ],
            "constraints": [{"requests": ["a"], "matchAttribute": "gpu.io/numa"}],
        },
        "t",
    )
    a, b = spec.requests
    assert a == DeviceRequest.exactly("a", "gpu", 2)
    assert (b.first_available, [(s.name, s.mode) for s in b.alternatives]) == (
        True,
        [("big", AllocationMode.ALL), ("small", AllocationMode.EXACT_COUNT)],
    )
    assert spec.constraints == (MatchAttribute("gpu.io/numa", ("a",)),)


@pytest.mark.parametrize(
    ("devices", "where"),
    [
        ({"requests": [{"name": "a"}]}, "t.requests[0]"),
        ({"requests": [{"name": "a", "exactly": {"count": 1}}]}, "t.requests[0].exactly"),
        (
            {"requests": [{"name": "a", "exactly": {"deviceClassName": "g", "count": "2"}}]},
            "t.requests[0].exactly.count",
        ),
        ({"requests": [], "constraints": [{"requests": []}]}, "t.constraints[0]"),
    ],
)
def test_a_bad_claim_spec_names_the_field(devices: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate.claim_spec(devices, "t")
    assert caught.value.where.startswith(where)


def container(cpu: str, memory: str = "0", **extra: Any) -> dict[str, Any]:
    requests = {"cpu": cpu, "memory": memory}
    return {"name": "c", "image": "i", "resources": {"requests": requests}, **extra}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"containers": [container("1"), container("500m")]}, {"cpu": 1500}),
        (
            {"containers": [container("1")], "initContainers": [container("3")]},
            {"cpu": 3000},
        ),
        (
            {
                "containers": [container("1")],
                "initContainers": [container("1", restartPolicy="Always"), container("1500m")],
            },
            {"cpu": 2500},
        ),
        ({"containers": [{"resources": {"limits": {"cpu": "2"}}}]}, {"cpu": 2000}),
        ({"containers": [container("1")], "overhead": {"cpu": "250m"}}, {"cpu": 1250}),
        (
            {"containers": [container("1", "1Gi")], "resources": {"requests": {"cpu": "4"}}},
            {"cpu": 4000, "memory": GIB},
        ),
    ],
    ids=["sum", "init-peak", "sidecar", "limits-default", "overhead", "pod-level"],
)
def test_pod_requests_count_like_kube_scheduler(
    spec: dict[str, Any], expected: dict[str, int]
) -> None:
    assert translate.pod_requests(spec, "p") == expected


def pod_obj(node: str | None, phase: str = "Running") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container("1")]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec, "status": {"phase": phase}}


def test_a_bound_pod_uses_its_requests_and_a_pod_slot() -> None:
    assert translate.pod_usage(pod_obj("n1")) == ("n1", {"cpu": 1000, "pods": 1})


@pytest.mark.parametrize(
    ("node", "phase"), [(None, "Pending"), ("n1", "Succeeded"), ("n1", "Failed")]
)
def test_unbound_or_finished_pods_use_nothing(node: str | None, phase: str) -> None:
    assert translate.pod_usage(pod_obj(node, phase)) is None


def test_the_owner_gang_is_the_controlling_gangjob() -> None:
    refs = [
        {"apiVersion": "batch/v1", "kind": "Job", "uid": "j", "controller": False},
        {"apiVersion": "phalanx.dev/v1alpha1", "kind": "GangJob", "uid": "g", "controller": True},
    ]
    assert translate.owner_gang({"metadata": {"ownerReferences": refs}}) == "g"
    assert translate.owner_gang({"metadata": {"ownerReferences": refs[:1]}}) is None


def test_a_priority_class_gives_name_value_and_default() -> None:
    obj = {"metadata": {"name": "high"}, "value": 1000, "globalDefault": True}
    assert translate.priority_class(obj) == ("high", 1000, True)


def queue_obj(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "team-a"}, "spec": spec}


def test_a_queue_has_quota_in_engine_units_and_its_selector() -> None:
    q = translate.queue(
        queue_obj(
            parent="root",
            weight=2.0,
            quota=[
                {"resource": "cpu", "nominal": "10", "borrowingLimit": "2"},
                {"resource": "devices/gpu", "nominal": 8, "lendingLimit": 4},
            ],
            namespaceSelector={"matchLabels": {"team": "a"}},
        )
    )
    assert (q.name, q.parent, q.weight) == ("team-a", "root", 2.0)
    assert (q.quota["cpu"].nominal, q.quota["cpu"].borrowing_limit) == (10000, 2000)
    assert (q.quota["devices/gpu"].nominal, q.quota["devices/gpu"].lending_limit) == (8, 4)
    assert q.namespace_selector is not None
    assert q.namespace_selector.matches({"team": "a"})


def test_a_bad_queue_names_the_object_and_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        translate.queue(queue_obj(quota=[{"resource": "cpu", "nominal": "many"}]))
    assert caught.value.where == "Queue team-a: spec.quota[0].nominal"


TEMPLATE = {
    "metadata": {"name": "one-gpu", "namespace": "ns"},
    "spec": {
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}}
    },
}


def gangjob(**spec: Any) -> dict[str, Any]:
    pod_spec = {
        "containers": [container("2", "4Gi")],
        "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
        "nodeSelector": {"zone": "a"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
    }
    base = {
        "queueName": "team-a",
        "podSets": [{"name": "worker", "replicas": 4, "template": {"spec": pod_spec}}],
    }
    return {
        "metadata": {
            "name": "train",
            "namespace": "ns",
            "uid": "u1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {**base, **spec},
    }


def test_a_gangjob_becomes_a_gang_with_per_pod_claims_from_templates() -> None:
    g = translate.gang(gangjob(), {"ns/one-gpu": TEMPLATE}, {})
    (ps,) = g.pod_sets
    assert (g.uid, g.name, g.namespace, g.queue, g.priority) == ("u1", "train", "ns", "team-a", 0)
    assert g.created == 1767225600.0
    assert (ps.name, ps.count, dict(ps.requests)) == ("worker", 4, {"cpu": 2000, "memory": 4 * GIB})
    assert ps.claims[0].name == "gpu"
    assert ps.claims[0].spec.requests == (DeviceRequest.exactly("gpu", "gpu"),)
    assert (dict(ps.node_selector), ps.tolerations) == (
        {"zone": "a"},
        (Toleration("gpu", "Exists"),),
    )


@pytest.mark.parametrize(
    ("spec", "priorities", "default", "expected"),
    [
        ({"priority": 5}, {}, 0, 5),
        ({"priorityClassName": "high"}, {"high": 1000}, 0, 1000),
        ({}, {}, 7, 7),
    ],
    ids=["own", "class", "global-default"],
)
def test_a_gang_priority_comes_from_the_spec_or_a_priority_class(
    spec: dict[str, Any], priorities: dict[str, int], default: int, expected: int
) -> None:
    g = translate.gang(gangjob(**spec), {"ns/one-gpu": TEMPLATE}, priorities, default)
    assert g.priority == expected


@pytest.mark.parametrize(
    ("spec", "templates", "where"),
    [
        (
            {"priorityClassName": "missing"},
            {"ns/one-gpu": TEMPLATE},
            "GangJob ns/train: spec.priorityClassName",
        ),
        (
            {},
            {},
            "GangJob ns/train: spec.podSets[0].template.spec.resourceClaims[0]"
            ".resourceClaimTemplateName",
        ),
        ({"podSets": []}, {}, "GangJob ns/train: spec.podSets"),
    ],
)
def test_a_bad_gangjob_names_the_field(
    spec: dict[str, Any], templates: dict[str, Any], where: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        translate.gang(gangjob(**spec), templates, {})
    assert caught.value.where == where


def reservation() -> Reservation:
    def pod(i: int) -> PodPlacement:
        device = DeviceAllocation("gpu", ("gpu.io", f"n{i}", "gpu-0"), "gpu")
        return PodPlacement(
            "worker",
            i,
            f"n{i}",
            {"cpu": 2000, "memory": 4 * GIB, "pods": 1},
            (ClaimAllocation("gpu", (device,)),),
        )

    return Reservation(
        "u1",
        "team-a",
        tuple(pod(i) for i in range(4)),
        {"cpu": 8000, "memory": 16 * GIB, "pods": 4, "devices/gpu": 4},
        {"devices/gpu": 1},
        admitted_at=5.0,
    )


def test_an_admission_record_lists_pods_devices_and_quota() -> None:
    record = translate.admission_record(reservation(), "u1-1")
    assert record["admissionId"] == "u1-1"
    assert record["quotaCharged"] == {
        "cpu": "8",
        "devices/gpu": "4",
        "memory": "16Gi",
        "pods": "4",
    }
    assert record["podSets"][0]["pods"][1] == {
        "index": 1,
        "node": "n1",
        "claims": [
            {
                "name": "gpu",
                "devices": [
                    {"request": "gpu", "driver": "gpu.io", "pool": "n1", "device": "gpu-0"}
                ],
            }
        ],
    }


def test_a_record_gives_back_the_reservation_it_was_made_from() -> None:
    g = translate.gang(gangjob(), {"ns/one-gpu": TEMPLATE}, {})
    record = translate.admission_record(reservation(), "u1-1")
    assert translate.reservation_from_record(g, record, admitted_at=5.0) == reservation()


def eight_gpu_reservation() -> Reservation:
    def pod(i: int) -> PodPlacement:
        devices = tuple(
            DeviceAllocation("gpu", ("gpu.io", f"n{i}", f"gpu-{d}"), "gpu") for d in range(8)
        )
        return PodPlacement(
            "worker", i, f"n{i}", {"cpu": 2000, "pods": 1}, (ClaimAllocation("gpu", devices),)
        )

    return Reservation("u1", "team-a", tuple(pod(i) for i in range(4)), {"devices/gpu": 32})


def test_a_written_record_gives_what_a_claims_devices_share_once_on_the_claim() -> None:
    record = translate.with_shared_device_fields(
        translate.admission_record(eight_gpu_reservation(), "u1-1")
    )
    assert record["podSets"][0]["pods"][1]["claims"] == [
        {
            "name": "gpu",
            "request": "gpu",
            "driver": "gpu.io",
            "pool": "n1",
            "devices": [{"device": f"gpu-{d}"} for d in range(8)],
        }
    ]


def test_a_device_keeps_the_fields_it_does_not_share_with_the_claims_others() -> None:
    record = translate.admission_record(reservation(), "u1-1")
    devices = record["podSets"][0]["pods"][0]["claims"][0]["devices"]
    devices.append({**devices[0], "pool": "elsewhere", "device": "gpu-1"})
    (claim,) = translate.with_shared_device_fields(record)["podSets"][0]["pods"][0]["claims"]
    assert (claim["request"], claim["driver"], "pool" in claim) == ("gpu", "gpu.io", False)
    assert claim["devices"] == [
        {"pool": "n0", "device": "gpu-0"},
        {"pool": "elsewhere", "device": "gpu-1"},
    ]


def test_a_record_with_shared_device_fields_gives_back_its_reservation() -> None:
    multi = translate.gang(gangjob(), {"ns/one-gpu": TEMPLATE}, {})
    record = translate.with_shared_device_fields(
        translate.admission_record(eight_gpu_reservation(), "u1-1")
    )
    restored = translate.reservation_from_record(multi, record)
    assert [p.claims for p in restored.pods] == [p.claims for p in eight_gpu_reservation().pods]


def _broken(change: str) -> dict[str, Any]:
    record = translate.admission_record(reservation(), "u1-1")
    pods = record["podSets"][0]["pods"]
    if change == "pod-set":
        record["podSets"][0]["name"] = "master"
    elif change == "index":
        pods[0]["index"] = 9
    elif change == "twice":
        pods[1]["index"] = 0
    elif change == "missing":
        del pods[3]
    elif change == "claim":
        pods[0]["claims"] = []
    elif change == "request":
        pods[0]["claims"][0]["devices"][0]["request"] = "nic"
    elif change == "no-request":  # neither the device nor its claim gives it
        del pods[0]["claims"][0]["devices"][0]["request"]
    return record


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ("pod-set", "status.admission.podSets[0].name"),
        ("index", "status.admission.podSets[0].pods[0].index"),
        ("twice", "status.admission.podSets[0].pods[1].index"),
        ("missing", "status.admission.podSets"),
        ("claim", "status.admission.podSets[0].pods[0].claims"),
        ("request", "status.admission.podSets[0].pods[0].claims[0].devices[0]"),
        ("no-request", "status.admission.podSets[0].pods[0].claims[0]: devices[0]"),
    ],
)
def test_a_record_that_does_not_fit_the_gang_names_the_field(change: str, where: str) -> None:
    g = translate.gang(gangjob(), {"ns/one-gpu": TEMPLATE}, {})
    with pytest.raises(InvalidInput) as caught:
        translate.reservation_from_record(g, _broken(change))
    assert caught.value.where == f"GangJob ns/train: {where}"
