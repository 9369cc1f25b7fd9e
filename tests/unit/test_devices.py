"""DRA inventory: match sets built once, kept current by slice and allocation events."""

from __future__ import annotations

import pytest

from controller.engine.cel import SelectorError
from controller.engine.devices import DeviceInventory
from controller.engine.errors import InvalidInput
from controller.engine.model import Device, DeviceClass, ResourceSlice
from tests.builders import DRIVER, GPU, gpu_slice

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
