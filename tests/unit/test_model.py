"""Engine input types refuse malformed objects with a message naming what and where."""

from __future__ import annotations

import pytest

from controller.engine.errors import InvalidInput
from controller.engine.model import (
    AllocationMode,
    ClaimSpec,
    Device,
    DeviceRequest,
    DeviceSubRequest,
    Gang,
    LabelOperator,
    LabelRequirement,
    MatchAttribute,
    Node,
    PodSet,
    Queue,
    QuotaLimit,
    ResourceSlice,
    Taint,
    TaintEffect,
    Toleration,
    Topology,
    TopologyMode,
)
from controller.engine.reservation import (
    ClaimAllocation,
    DeviceAllocation,
    PodPlacement,
    Reservation,
)

DRIVER = "gpu.example.com"


def make_gang(**kw):
    base = dict(uid="u", name="job", namespace="ns", queue="q", pod_sets=(PodSet("w", 1, {}),))
    base.update(kw)
    return Gang(**base)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Node("", {}), "node.name: must not be empty"),
        (lambda: Node("n", {"cpu": -1}), "node n: allocatable[cpu]: must not be negative"),
        (lambda: Node("n", {"cpu": 1.5}), "node n: allocatable[cpu]: must be an integer"),
        (lambda: Device(DRIVER, "p", "d", None, {"model": "x"}), "must be qualified"),
        (
            lambda: ResourceSlice("s", DRIVER, "p", "n1", (Device(DRIVER, "p", "d", "n2"),)),
            "resourceSlice s: device d: driver, pool and node must match the slice",
        ),
        (
            lambda: ResourceSlice("s", DRIVER, "p", None, (Device(DRIVER, "p", "d", None),) * 2),
            "device name 'd' appears twice",
        ),
        (lambda: DeviceSubRequest("r", "gpu", count=0), "request r: count: must be >= 1"),
        (lambda: DeviceSubRequest("r", ""), "request r: deviceClassName: must not be empty"),
        (lambda: DeviceRequest("r", ()), "request r: needs `exactly` or `firstAvailable`"),
        (
            lambda: ClaimSpec((DeviceRequest.exactly("a", "gpu"),) * 2),
            "claim.requests: request names must be unique",
        ),
        (
            lambda: ClaimSpec(
                (DeviceRequest.exactly("a", "gpu"),), (MatchAttribute("x/y", ("b",)),)
            ),
            "'b' is not a request of this claim",
        ),
        (
            lambda: ClaimSpec((DeviceRequest.exactly("a", "gpu"),), (MatchAttribute("model"),)),
            "must be qualified as domain/name",
        ),
        (lambda: PodSet("w", 0, {}), "podSet w: count: must be >= 1, got 0"),
        (
            lambda: PodSet("w", 1, {"memory": -5}),
            "podSet w: requests[memory]: must not be negative",
        ),
        (lambda: make_gang(pod_sets=()), "gang ns/job: podSets: needs at least one pod set"),
        (
            lambda: make_gang(pod_sets=(PodSet("w", 1, {}), PodSet("w", 2, {}))),
            "pod set names must be unique",
        ),
        (lambda: make_gang(queue=""), "gang ns/job: queue: must not be empty"),
        (lambda: Topology("model", device_attribute=True), "must be qualified domain/name"),
        (lambda: QuotaLimit(-1), "quota.nominal: must not be negative, got -1"),
        (lambda: QuotaLimit(1, lending_limit=-2), "quota.lending_limit: must not be negative"),
        (lambda: Queue("q", parent="q"), "queue q: parent: a queue cannot be its own parent"),
        (lambda: Queue("q", weight=-1), "queue q: weight: must be >= 0"),
    ],
)
def test_malformed_input_is_refused_with_what_and_where(build, message):
    with pytest.raises(InvalidInput, match=None) as err:
        build()
    assert message in str(err.value)


def test_unknown_label_selector_operator_is_refused():
    with pytest.raises(InvalidInput, match="operator: must be one of In, NotIn, Exists, Does"):
        LabelRequirement("a", "Near", ("b",))


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        (Toleration("gpu", "Exists"), Taint("gpu", "x"), True),
        (Toleration("gpu", "Equal", "x"), Taint("gpu", "x"), True),
        (Toleration("gpu", "Equal", "y"), Taint("gpu", "x"), False),
        (Toleration("", "Exists"), Taint("anything"), True),
        (Toleration("gpu", "Exists", effect="NoExecute"), Taint("gpu"), False),
    ],
)
def test_toleration_matching_follows_kubernetes(toleration, taint, tolerated):
    assert toleration.tolerates(taint) is tolerated


def test_prefer_no_schedule_taints_do_not_block():
    n = Node("n", {}, taints=(Taint("soft", effect="PreferNoSchedule"), Taint("hard")))
    assert [t.key for t in n.blocking_taints(())] == ["hard"]


def test_gang_order_key_breaks_ties_by_priority_then_age_then_uid():
    a = make_gang(uid="b", priority=1, created=5.0)
    b = make_gang(uid="a", priority=1, created=5.0)
    c = make_gang(uid="c", priority=2, created=9.0)
    assert sorted([a, b, c], key=lambda g: g.order_key) == [c, b, a]


NAN, INF = float("nan"), float("inf")


def refusal(build):
    with pytest.raises(InvalidInput) as err:
        build()
    return str(err.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PodSet("w", 1.5, {}), "podSet w: count: must be an integer, got 1.5"),
        (lambda: PodSet("w", True, {}), "podSet w: count: must be an integer, got True"),
        (lambda: PodSet("w", "3", {}), "podSet w: count: must be an integer, got '3'"),
        (lambda: PodSet("w", 2**31, {}), "podSet w: count: must be <= 2147483647"),
        (
            lambda: DeviceSubRequest("r", "gpu", count=2.5),
            "request r: count: must be an integer, got 2.5",
        ),
        (lambda: DeviceSubRequest("r", "gpu", count=False), "must be an integer, got False"),
        (lambda: PodSet("w", 1, {"cpu": True}), "podSet w: requests[cpu]: must be an integer"),
        (lambda: Node("n", {"cpu": 2**63}), "node n: allocatable[cpu]: must be <= "),
        (lambda: QuotaLimit(1.5), "quota.nominal: must be an integer, got 1.5"),
        (lambda: QuotaLimit(True), "quota.nominal: must be an integer, got True"),
        (lambda: QuotaLimit(1, borrowing_limit=2.0), "quota.borrowing_limit: must be an integer"),
        (lambda: make_gang(priority=1.5), "gang ns/job: priority: must be an integer, got 1.5"),
        (lambda: make_gang(priority=True), "gang ns/job: priority: must be an integer, got True"),
        (lambda: make_gang(priority="5"), "gang ns/job: priority: must be an integer, got '5'"),
    ],
)
def test_counts_amounts_and_priorities_must_be_integers(build, message):
    assert message in refusal(build)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: make_gang(created=NAN), "gang ns/job: created: must be a finite number, got nan"),
        (lambda: make_gang(created=INF), "gang ns/job: created: must be a finite number, got inf"),
        (lambda: make_gang(created=float("1e400")), "created: must be a finite number, got inf"),
        (lambda: make_gang(created=-INF), "created: must be a finite number, got -inf"),
        (lambda: make_gang(created="0"), "gang ns/job: created: must be a number, got '0'"),
        (lambda: make_gang(runtime_estimate=NAN), "runtime_estimate: must be a finite number"),
        (lambda: make_gang(runtime_estimate=-1.0), "runtime_estimate: must be >= 0, got -1.0"),
        (lambda: make_gang(min_runtime=INF), "min_runtime: must be a finite number, got inf"),
        (lambda: make_gang(min_runtime=-5), "min_runtime: must be >= 0, got -5"),
        (lambda: make_gang(checkpoint_interval=0), "checkpoint_interval: must be > 0, got 0"),
        (lambda: make_gang(checkpoint_interval=NAN), "checkpoint_interval: must be a finite"),
        (lambda: Queue("q", weight=NAN), "queue q: weight: must be a finite number, got nan"),
        (lambda: Queue("q", weight=INF), "queue q: weight: must be a finite number, got inf"),
        (lambda: Queue("q", weight=True), "queue q: weight: must be a number, got True"),
    ],
)
def test_times_and_weights_must_be_finite_numbers(build, message):
    assert message in refusal(build)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: DeviceSubRequest("r", "gpu", mode="exactcount"),
            "request r: allocationMode: must be one of ExactCount, All, got 'exactcount'",
        ),
        (lambda: Topology("rack", mode="strict"), "topology rack: mode: must be one of required"),
        (
            lambda: Taint("gpu", effect="NoSchedul"),
            "taint gpu: effect: must be one of NoSchedule, PreferNoSchedule, NoExecute",
        ),
        (
            lambda: Toleration("gpu", "Exist"),
            "toleration 'gpu': operator: must be one of Equal, Exists, got 'Exist'",
        ),
        (lambda: Toleration("gpu", effect="Never"), "toleration 'gpu': effect: must be one of"),
        (
            lambda: Toleration("gpu", "Exists", "x"),
            "toleration 'gpu': value: must be empty with operator Exists, got 'x'",
        ),
        (lambda: Toleration("", "Equal"), "operator: must be Exists when the key is empty"),
        (lambda: LabelRequirement("a", "In"), "[a]: values: must not be empty with In"),
        (lambda: LabelRequirement("a", "NotIn"), "[a]: values: must not be empty with NotIn"),
        (lambda: LabelRequirement("a", "Exists", ("b",)), "[a]: values: must be empty with Exists"),
        (lambda: LabelRequirement("a", "DoesNotExist", ("b",)), "must be empty with DoesNotExist"),
    ],
)
def test_enums_and_their_kubernetes_rules_are_enforced(build, message):
    assert message in refusal(build)


def test_an_enum_may_be_given_as_its_exact_string_value():
    sub = DeviceSubRequest("r", "gpu", mode="All")
    assert sub.mode is AllocationMode.ALL
    assert Topology("rack", mode="preferred").mode is TopologyMode.PREFERRED
    assert Taint("gpu", effect="NoExecute").effect is TaintEffect.NO_EXECUTE
    assert LabelRequirement("a", "In", ("b",)).operator is LabelOperator.IN


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Node(5, {}), "node.name: must be a string, got 5"),
        (lambda: make_gang(uid=""), "gang ns/job: uid: must not be empty"),
        (lambda: make_gang(namespace=""), "gang u: namespace: must not be empty"),
        (lambda: PodSet("w", 1, {}, claims=[]), "podSet w: claims: must be a tuple, got []"),
        (lambda: PodSet("w", 1, {}, tolerations=("x",)), "podSet w: tolerations[0]: must be a"),
        (lambda: PodSet("w", 1, {}, node_selector={"a": 1}), "nodeSelector[a]: must be a string"),
        (
            lambda: Device(DRIVER, "p", "d", None, {f"{DRIVER}/x": 1.5}),
            f"device {DRIVER}/p/d: attributes[{DRIVER}/x]: must be a bool, int, string or Version",
        ),
        (
            lambda: Device(DRIVER, "p", "d", None, capacity={f"{DRIVER}/mem": "1.5.3Gi"}),
            f"device {DRIVER}/p/d: capacity[{DRIVER}/mem]: '1.5.3Gi' is not a Kubernetes quantity",
        ),
        (lambda: Queue("q", quota={"cpu": 4}), "queue q: quota[cpu]: must be a QuotaLimit, got 4"),
        (lambda: Queue("q", parent=""), "queue q: parent: must not be empty"),
    ],
)
def test_names_maps_and_nested_objects_are_checked(build, message):
    assert message in refusal(build)


@pytest.mark.parametrize(
    ("pods", "message"),
    [
        ((PodPlacement("w", -1, "n1", {}),), "pod w: index: must not be negative, got -1"),
        ((PodPlacement("w", 0, "n1", {"cpu": 0.5}),), "pod w-0: requests[cpu]: must be an integer"),
        (
            (PodPlacement("w", 0, "n1", {}), PodPlacement("w", 0, "n2", {})),
            "pod w-0 appears twice",
        ),
        (
            (
                PodPlacement(
                    "w",
                    0,
                    "n1",
                    {},
                    (ClaimAllocation("c", (DeviceAllocation("r", ("d", "p"), "gpu"),)),),
                ),
            ),
            "must be (driver, pool, name), got ('d', 'p')",
        ),
    ],
)
def test_a_reservation_checks_everything_it_holds(pods, message):
    with pytest.raises(InvalidInput) as err:
        Reservation("g", "q", pods, {})
    assert message in str(err.value)
