"""Engine input types refuse malformed objects with a message naming what and where."""

from __future__ import annotations

import pytest

from controller.engine.errors import InvalidInput
from controller.engine.model import (
    ClaimSpec,
    Device,
    DeviceRequest,
    DeviceSubRequest,
    Gang,
    LabelRequirement,
    MatchAttribute,
    Node,
    PodSet,
    Queue,
    QuotaLimit,
    ResourceSlice,
    Taint,
    Toleration,
    Topology,
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
