"""DRA inventory: match sets built once, kept current by slice and allocation events."""

from __future__ import annotations

import pytest

from controller.engine.cel import SelectorError
from controller.engine.cycle import Engine, Outcome
from controller.engine.devices import DeviceInventory, domain_label
from controller.engine.errors import InvalidInput
from controller.engine.model import (
    AttributeValue,
    ClaimSpec,
    Device,
    DeviceClass,
    DeviceRequest,
    MatchAttribute,
    PodClaim,
    ResourceSlice,
    Version,
)
from tests.builders import DRIVER, GPU, cluster, gang, gpu_slice, node, pod_set

BIG = f'device.capacity["{DRIVER}"].memory.compareTo(quantity("80Gi")) >= 0'


@pytest.fixture
def inv() -> DeviceInventory:
    inv = DeviceInventory()
    inv.upsert_class(DeviceClass(GPU, (f'device.driver == "{DRIVER}"',)))
    inv.upsert_slice(gpu_slice("a", 4, memory="80Gi"))
    inv.upsert_slice(gpu_slice("b", 4, memory="40Gi"))
    return inv


def test_match_set_holds_devices_satisfying_class_and_request_selectors(inv):
    ms = inv.match_set((GPU, (BIG,)))
    assert set(ms.by_node) == {"a"}
    assert ms.free == {"a": 4}


def test_a_new_slice_joins_existing_match_sets(inv):
    ms = inv.match_set((GPU, (BIG,)))
    inv.upsert_slice(gpu_slice("c", 2, memory="80Gi"))
    assert ms.free == {"a": 4, "c": 2}


def test_a_removed_slice_leaves_match_sets(inv):
    ms = inv.match_set((GPU, ()))
    inv.remove_slice("b-gpus")
    assert "b" not in ms.by_node and not ms.free.get("b")


def test_allocation_moves_free_counts_and_buckets(inv):
    ms = inv.match_set((GPU, ()))
    inv.allocate([(DRIVER, "a", "gpu-0")], "claim-1")
    assert ms.free["a"] == 3
    assert list(ms.nodes_with_free(4)) == ["b"]
    inv.release([(DRIVER, "a", "gpu-0")], "claim-1")
    assert ms.free["a"] == 4


def test_pods_fitting_counts_whole_pods_per_node(inv):
    ms = inv.match_set((GPU, ()))
    assert ms.pods_fitting(3) == 2
    assert ms.pods_fitting(2) == 4


def test_pods_fitting_follows_every_allocation_and_release(inv):
    ms = inv.match_set((GPU, ()))
    assert ms.pods_fitting(4) == 2
    inv.allocate([(DRIVER, "a", "gpu-0")], "claim-1")
    assert ms.pods_fitting(4) == 1
    inv.release([(DRIVER, "a", "gpu-0")], "claim-1")
    assert ms.pods_fitting(4) == 2


def test_changing_a_device_class_drops_its_match_sets(inv):
    before = inv.match_set((GPU, ()))
    inv.upsert_class(DeviceClass(GPU, (BIG,)))
    after = inv.match_set((GPU, ()))
    assert after is not before and set(after.by_node) == {"a"}


def test_a_class_whose_selector_does_not_compile_changes_nothing(inv):
    with pytest.raises(SelectorError, match=r"deviceClass gpu: spec.selectors\[0\]"):
        inv.upsert_class(DeviceClass(GPU, ("device.driver ==",)))
    assert inv.classes[GPU].selectors == (f'device.driver == "{DRIVER}"',)


def test_unknown_class_gives_an_empty_match_set_marked_missing(inv):
    assert inv.match_set(("tpu", ())).class_missing


def test_selector_runtime_errors_are_kept_for_explanations(inv):
    ms = inv.match_set((GPU, ('device.attributes["other.io"].x == 1',)))
    assert not ms.by_node
    assert ms.errors


def test_a_device_held_by_someone_else_may_be_unpublished(inv):
    inv.allocate([("other.io", "pool", "ghost")], "foreign:x")
    assert not inv.is_free(("other.io", "pool", "ghost"))


def test_a_device_already_published_by_another_slice_is_refused(inv):
    dup = gpu_slice("a", 1)
    with pytest.raises(InvalidInput, match="already published by another slice"):
        inv.upsert_slice(ResourceSlice("other", dup.driver, dup.pool, dup.node, dup.devices))


def test_shareable_devices_stay_free_when_allocated(inv):
    inv.upsert_slice(
        ResourceSlice(
            "s", DRIVER, "shared", None, (Device(DRIVER, "shared", "d", None, shareable=True),)
        )
    )
    inv.allocate([(DRIVER, "shared", "d")], "c1")
    inv.allocate([(DRIVER, "shared", "d")], "c2")
    assert inv.is_free((DRIVER, "shared", "d"))
    assert inv.double_allocations() == []


def test_double_allocation_is_reported(inv):
    inv.allocate([(DRIVER, "a", "gpu-0")], "c1")
    inv.allocate([(DRIVER, "a", "gpu-0")], "c2")
    assert inv.double_allocations() == [f"device {DRIVER}/a/gpu-0 held by ['c1', 'c2']"]


def test_releasing_a_device_not_held_is_refused(inv):
    with pytest.raises(InvalidInput, match="is not held by c1"):
        inv.release([(DRIVER, "a", "gpu-0")], "c1")


# ---- typed attribute values: bool, int, string and version never stand for each other ----

FLAG = f"{DRIVER}/flag"


def flagged_slice(node_name: str, *flags: AttributeValue) -> ResourceSlice:
    """Devices gpu-0.. on a node, identical but for their `flag` attribute."""
    devices = tuple(
        Device(DRIVER, node_name, f"gpu-{i}", node_name, {FLAG: flag})
        for i, flag in enumerate(flags)
    )
    return ResourceSlice(f"{node_name}-gpus", DRIVER, node_name, node_name, devices)


@pytest.mark.parametrize(("on_a", "on_b"), [(True, 1), (1, True), (False, 0), (0, False)])
def test_match_sets_keep_bool_and_int_attributes_apart(on_a, on_b):
    """Equal-content devices share one CEL evaluation; True and 1 are not equal content."""
    inv = DeviceInventory()
    inv.upsert_class(DeviceClass(GPU))
    inv.upsert_slice(flagged_slice("a", on_a))
    inv.upsert_slice(flagged_slice("b", on_b))
    is_bool = f'type(device.attributes["{DRIVER}"].flag) == bool'
    assert set(inv.match_set((GPU, (is_bool,))).by_node) == {
        n for n, v in (("a", on_a), ("b", on_b)) if isinstance(v, bool)
    }


@pytest.mark.parametrize("value", [1.0, 0.5, None, b"1", ["1"]])
def test_a_device_attribute_outside_dra_types_is_refused(value):
    with pytest.raises(InvalidInput, match=rf"device {DRIVER}/p/d: attributes\[{FLAG}\]"):
        Device(DRIVER, "p", "d", None, {FLAG: value})


@pytest.mark.parametrize(
    ("values", "labels"),
    [
        (("1", 1), ["1", "1 (int)"]),
        ((True, "True", "true", 1), ["1 (int)", "True", "true", "true (bool)"]),
        ((Version("1.0.0"), "1.0.0"), ["1.0.0", "1.0.0 (version)"]),
        (("1 (int)", 1), ['"1 (int)" (string)', "1 (int)"]),
    ],
)
def test_topology_domains_of_values_that_print_alike_stay_distinct(values, labels):
    inv = DeviceInventory()
    for i, value in enumerate(values):
        inv.upsert_slice(flagged_slice(f"n{i}", value))
    domains = inv.attribute_domains(FLAG)
    assert sorted(domains) == sorted(labels)
    assert sorted(tuple(by_node) for by_node in domains.values()) == [
        (f"n{i}",) for i in range(len(values))
    ]


def test_domain_labels_name_the_type_of_non_string_values():
    assert [domain_label(v) for v in ("nvl-0", 3, False, Version("2.1.0"))] == [
        "nvl-0",
        "3 (int)",
        "false (bool)",
        "2.1.0 (version)",
    ]


def two_request_claim() -> PodClaim:
    """Two GPUs from separate requests that must share their `flag` value."""
    spec = ClaimSpec(
        (DeviceRequest.exactly("a", GPU), DeviceRequest.exactly("b", GPU)),
        (MatchAttribute(FLAG),),
    )
    return PodClaim("gpus", spec)


@pytest.mark.parametrize(
    ("flags", "outcome"),
    [
        ((True, 1), Outcome.PENDING),
        ((1, True), Outcome.PENDING),
        ((0, False), Outcome.PENDING),
        (("1", 1), Outcome.PENDING),
        ((True, True), Outcome.ADMITTED),
        ((1, 1), Outcome.ADMITTED),
    ],
)
def test_match_attribute_does_not_group_equal_values_of_different_types(flags, outcome):
    state = cluster(nodes=0)
    state.upsert_node(node("n0"))
    state.upsert_slice(flagged_slice("n0", *flags))
    state.add_gang(gang("g", pod_sets=(pod_set(1, claims=(two_request_claim(),)),)))
    (decision,) = Engine(state).cycle().decisions
    assert decision.outcome is outcome
