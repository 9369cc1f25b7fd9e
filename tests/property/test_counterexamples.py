"""Engine bugs the properties found, minimised by hand, kept as plain regression tests.

Each one runs the same check as the property that found it, on a fixed scenario, so it
fails whenever that bug is present, whatever the random search happens to draw. They are
kept out of `@example` on purpose: a failing explicit example stops Hypothesis from
searching, and the properties should keep looking for other bugs meanwhile.
"""

from __future__ import annotations

from controller.engine.model import Device, Queue, ResourceSlice
from tests.builders import DRIVER, gang, gpu_quota, gpu_slice, node
from tests.property.strategies import ClusterSpec, Scenario
from tests.property.test_invariants import check_all_or_nothing, check_invariants
from tests.property.test_placement import check_precheck
from tests.property.test_release_rollback import check_rollback


def one_node(cpu: int = 16, gpus: int = 0, quota: Queue | None = None) -> ClusterSpec:
    slices = (gpu_slice("n0", gpus),) if gpus else ()
    return ClusterSpec((node("n0", cpu=cpu),), slices, (quota or Queue("q0"),), ("q0",))


def test_republishing_a_queue_that_holds_usage() -> None:
    """Property 1. Re-publishing an unchanged queue while a gang holds quota makes the
    incremental pool usage count cpu/memory/pods too, which `violations()` then reports
    ("q0: memory pool usage ... > 0") although nothing changed."""
    sc = Scenario(
        one_node(quota=Queue("q0", quota=gpu_quota(4))),
        (("add", gang("a", queue="q0")), ("cycle", "commit"), ("touch_queue", 0, False)),
        "none",
    )
    check_invariants(sc)


def test_rolling_back_a_preemptor_alone_does_not_overcommit_its_victims_node() -> None:
    """Property 1 (invariant 2). p (priority 1) evicts v to fit; q fits in what v freed;
    rolling back p alone restores v on top of q: node n0 uses 20 of 16 cpu."""
    sc = Scenario(
        one_node(),
        (
            ("add", gang("v", cpu=12, queue="q0")),
            ("cycle", "commit"),
            ("add", gang("p", cpu=8, queue="q0", priority=1, created=1)),
            ("add", gang("q", cpu=8, queue="q0", priority=1, created=2)),
            ("cycle", "mixed", (False, True)),
        ),
        "lower",
    )
    check_invariants(sc)


def test_rolling_back_a_preemptor_alone_when_its_victims_devices_were_reused() -> None:
    """Property 1. As above with GPUs: the rollback raises ReservationConflict half way,
    after p is released but before v is back."""
    sc = Scenario(
        one_node(gpus=2),
        (
            ("add", gang("v", gpus=2, queue="q0")),
            ("cycle", "commit"),
            ("add", gang("p", gpus=1, queue="q0", priority=1, created=1)),
            ("add", gang("q", gpus=1, queue="q0", priority=1, created=2)),
            ("cycle", "mixed", (False, True)),
        ),
        "lower",
    )
    check_invariants(sc)


SAME_CYCLE_VICTIM = (
    ("add", gang("a", gpus=1, queue="q0", created=0)),
    ("add", gang("b", gpus=1, queue="q0", created=1)),
)
"""a is admitted tentatively, then b (same priority) evicts a in the same cycle."""


def test_committing_a_gang_evicted_in_its_own_cycle() -> None:
    """Property 2. The ledger still commits a's reservation (commit_all returns it) while
    a is pending and b holds the GPU a's reservation names."""
    sc = Scenario(one_node(gpus=1), (*SAME_CYCLE_VICTIM, ("cycle", "commit")), "lower-or-equal")
    check_all_or_nothing(sc)


def test_rolling_back_a_gang_evicted_in_its_own_cycle() -> None:
    """Property 6. Rolling back a (per gang, in admission order) raises InvalidInput
    "gang a: holds no reservation"."""
    sc = Scenario(
        one_node(gpus=1), (*SAME_CYCLE_VICTIM, ("cycle", "mixed", (False, True))), "lower-or-equal"
    )
    check_rollback(sc)


def test_republishing_a_slice_with_a_held_shareable_device() -> None:
    """Property 1 (index bookkeeping). A shareable device stays "free" while held; when its
    slice is re-published (or removed) the inventory drops the device before asking
    is_free, sees a held unknown device, skips the decrement and then counts it again: the
    match set's free count on n0 grows by one per re-publish."""
    shared = Device(DRIVER, "n0", "gpu-0", "n0", shareable=True)
    spec = ClusterSpec(
        (node("n0"),),
        (ResourceSlice("n0-gpus", DRIVER, "n0", "n0", (shared,)),),
        (Queue("q0"),),
        ("q0",),
    )
    sc = Scenario(
        spec,
        (("add", gang("a", gpus=1, queue="q0")), ("cycle", "commit"), ("slice", 0, "publish")),
        "none",
    )
    check_invariants(sc)


def test_adding_a_child_to_a_leaf_that_holds_usage() -> None:
    """Property 1 (quota bookkeeping). q0 holds 3 GPUs of quota when a child queue is added
    under it: the incremental pool usage keeps q0's own usage, recomputed_pool_usage()
    (inner queues have no own usage) drops it, so they disagree."""
    sc = Scenario(
        one_node(gpus=4, quota=Queue("q0", quota=gpu_quota(4))),
        (
            ("add", gang("a", gpus=3, queue="q0")),
            ("cycle", "commit"),
            ("add_queue", 0, {}),
        ),
        "none",
    )
    check_invariants(sc)


def shared_gpu_node() -> ClusterSpec:
    shared = Device(DRIVER, "n0", "gpu-0", "n0", shareable=True)
    return ClusterSpec(
        (node("n0"),),
        (ResourceSlice("n0-gpus", DRIVER, "n0", "n0", (shared,)),),
        (Queue("q0"),),
        ("q0",),
    )


def test_removing_the_slice_of_a_shared_device() -> None:
    """Property 1 (invariant 1 check). Gangs a and b share n0's shareable GPU; its slice is
    then removed (driver restart). Nothing was double-allocated, but `violations()` reports
    "device .../gpu-0 held by [a/worker-0/gpu, b/worker-0/gpu]": once unpublished, a
    device's shareability is forgotten and several holders count as a double allocation."""
    sc = Scenario(
        shared_gpu_node(),
        (
            ("add", gang("a", gpus=1, queue="q0")),
            ("add", gang("b", gpus=1, queue="q0")),
            ("cycle", "commit"),
            ("slice", 0, "remove"),
        ),
        "none",
    )
    check_invariants(sc)


def test_failed_preemption_after_a_shared_device_was_unpublished() -> None:
    """Property 2. a and b share n0's shareable GPU; the slice is removed; p (priority 1)
    does not fit, evicts a and b, still does not fit, and the engine undoes the evictions:
    b is restored, but a's restore is refused ("device .../gpu-0 is held by [b/...]", the
    unpublished device no longer counts as shareable). So a failed preemption attempt
    costs a its admission (or, without the ledger's `unrestorable` handling, cycle()
    raises ReservationConflict)."""
    sc = Scenario(
        shared_gpu_node(),
        (
            ("add", gang("a", gpus=1, queue="q0")),
            ("add", gang("b", gpus=1, queue="q0")),
            ("cycle", "commit"),
            ("slice", 0, "remove"),
            ("add", gang("p", gpus=1, queue="q0", priority=1)),
            ("cycle", "commit"),
        ),
        "lower",
    )
    check_all_or_nothing(sc)


def test_precheck_counts_a_shareable_device_once() -> None:
    """Precheck property. Gang a: 2 pods x 1 GPU; n0 has one shareable GPU, which both pods
    can share (the search places them). The precheck refuses: "pod set worker needs 2 pods
    x 1 gpu devices; free devices can host only 1 such pods"."""
    sc = Scenario(
        shared_gpu_node(),
        (("add", gang("a", pods=2, gpus=1, queue="q0")), ("cycle", "commit")),
        "none",
    )
    check_precheck(sc)
