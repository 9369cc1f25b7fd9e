"""Every malformed value given to an engine constructor is refused with InvalidInput: never
accepted silently, never a TypeError, ValueError or anything else from deeper down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.engine.errors import InvalidInput
from controller.engine.model import (
    ClaimSpec,
    Device,
    DeviceRequest,
    DeviceSubRequest,
    Gang,
    LabelRequirement,
    Node,
    PodClaim,
    PodSet,
    Queue,
    QuotaLimit,
    Taint,
    Toleration,
    Topology,
)
from controller.engine.reservation import PodPlacement, Reservation
from tests.property.harness import property_settings

NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf"), float("1e400")])
BOOLS = st.booleans()
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=8)
NOT_NONE_JUNK = st.sampled_from([[], {}, (), object(), b"1"])
JUNK = st.none() | NOT_NONE_JUNK

NOT_AN_INT = FLOATS | BOOLS | TEXT | JUNK
"""Never an int: `2.0` is refused like `1.5`, and `True` is not 1."""
NOT_A_COUNT = NOT_AN_INT | st.integers(max_value=0)
NOT_A_SIZE = NOT_AN_INT | st.integers(max_value=-1)
NOT_A_TIME = NON_FINITE | BOOLS | TEXT | JUNK
NEGATIVE = st.floats(max_value=-1e-9, allow_nan=False) | st.integers(max_value=-1)
NOT_A_DURATION = NOT_A_TIME | NEGATIVE
NOT_AN_OPTIONAL_DURATION = NON_FINITE | BOOLS | TEXT | NOT_NONE_JUNK | NEGATIVE
NOT_A_NAME = st.just("") | st.integers() | BOOLS | JUNK


def not_one_of(*allowed: str) -> st.SearchStrategy[object]:
    return TEXT.filter(lambda t: t not in allowed) | st.integers() | BOOLS | JUNK


@dataclass(frozen=True)
class Field:
    """One constructor field, how to build the object with a value in it, and bad values."""

    name: str
    build: Callable[[object], object]
    bad: st.SearchStrategy[object]


def gang(**kw: object) -> Gang:
    base: dict[str, object] = dict(
        uid="u", name="job", namespace="ns", queue="q", pod_sets=(PodSet("w", 1, {}),)
    )
    return Gang(**{**base, **kw})  # type: ignore[arg-type]


DRIVER = "gpu.example.com"
FIELDS = [
    Field("PodSet.count", lambda v: PodSet("w", v, {}), NOT_A_COUNT),  # type: ignore[arg-type]
    Field("PodSet.requests", lambda v: PodSet("w", 1, {"cpu": v}), NOT_A_SIZE),  # type: ignore[dict-item]
    Field("PodSet.name", lambda v: PodSet(v, 1, {}), NOT_A_NAME),  # type: ignore[arg-type]
    Field("Node.allocatable", lambda v: Node("n", {"memory": v}), NOT_A_SIZE),  # type: ignore[dict-item]
    Field("Node.name", lambda v: Node(v, {}), NOT_A_NAME),  # type: ignore[arg-type]
    Field("Node.unschedulable", lambda v: Node("n", {}, unschedulable=v), TEXT | st.integers()),  # type: ignore[arg-type]
    Field(
        "DeviceSubRequest.count",
        lambda v: DeviceSubRequest("r", "gpu", count=v),  # type: ignore[arg-type]
        NOT_A_COUNT,
    ),
    Field(
        "DeviceSubRequest.mode",
        lambda v: DeviceSubRequest("r", "gpu", mode=v),  # type: ignore[arg-type]
        not_one_of("ExactCount", "All"),
    ),
    Field(
        "DeviceRequest.exactly.count",
        lambda v: PodClaim("c", ClaimSpec((DeviceRequest.exactly("r", "gpu", v),))),  # type: ignore[arg-type]
        NOT_A_COUNT,
    ),
    Field(
        "Device.capacity",
        lambda v: Device(DRIVER, "p", "d", None, capacity={f"{DRIVER}/mem": v}),  # type: ignore[dict-item]
        NON_FINITE | st.sampled_from(["1.5.3Gi", "", " 1", "1Gib", "NaN", "--1"]) | JUNK,
    ),
    Field(
        "Device.attributes",
        lambda v: Device(DRIVER, "p", "d", None, {f"{DRIVER}/x": v}),  # type: ignore[dict-item]
        FLOATS | JUNK,
    ),
    Field("Topology.mode", lambda v: Topology("rack", mode=v), not_one_of("required", "preferred")),  # type: ignore[arg-type]
    Field(
        "Taint.effect",
        lambda v: Taint("k", effect=v),  # type: ignore[arg-type]
        not_one_of("NoSchedule", "PreferNoSchedule", "NoExecute"),
    ),
    Field("Toleration.operator", lambda v: Toleration("k", v), not_one_of("Equal", "Exists")),  # type: ignore[arg-type]
    Field(
        "Toleration.effect",
        lambda v: Toleration("k", effect=v),  # type: ignore[arg-type]
        not_one_of("", "NoSchedule", "PreferNoSchedule", "NoExecute"),
    ),
    Field(
        "Toleration.value with Exists",
        lambda v: Toleration("k", "Exists", v),  # type: ignore[arg-type]
        TEXT.filter(bool) | st.integers() | JUNK,
    ),
    Field(
        "LabelRequirement.operator",
        lambda v: LabelRequirement("k", v, ("a",)),  # type: ignore[arg-type]
        not_one_of("In", "NotIn"),
    ),
    Field("Gang.priority", lambda v: gang(priority=v), NOT_AN_INT | st.integers(min_value=2**31)),
    Field("Gang.created", lambda v: gang(created=v), NOT_A_TIME),
    Field("Gang.runtime_estimate", lambda v: gang(runtime_estimate=v), NOT_AN_OPTIONAL_DURATION),
    Field("Gang.min_runtime", lambda v: gang(min_runtime=v), NOT_A_DURATION),
    Field(
        "Gang.checkpoint_interval",
        lambda v: gang(checkpoint_interval=v),
        NOT_AN_OPTIONAL_DURATION | st.just(0),
    ),
    Field("Gang.uid", lambda v: gang(uid=v), NOT_A_NAME),
    Field("Gang.queue", lambda v: gang(queue=v), NOT_A_NAME),
    Field("Gang.pod_sets", lambda v: gang(pod_sets=v), JUNK | TEXT),
    Field("QuotaLimit.nominal", lambda v: QuotaLimit(v), NOT_A_SIZE),  # type: ignore[arg-type]
    Field("QuotaLimit.borrowing_limit", lambda v: QuotaLimit(1, v), NOT_A_SIZE.filter(bool)),  # type: ignore[arg-type]
    Field("QuotaLimit.lending_limit", lambda v: QuotaLimit(1, None, v), NOT_A_SIZE.filter(bool)),  # type: ignore[arg-type]
    Field("Queue.weight", lambda v: Queue("q", weight=v), NOT_A_DURATION),  # type: ignore[arg-type]
    Field("Queue.name", lambda v: Queue(v), NOT_A_NAME),  # type: ignore[arg-type]
    Field(
        "Reservation.pods.index",
        lambda v: Reservation("g", "q", (PodPlacement("w", v, "n", {}),), {}),  # type: ignore[arg-type]
        NOT_A_SIZE,
    ),
    Field(
        "Reservation.admitted_at",
        lambda v: Reservation("g", "q", (), {}, admitted_at=v),
        NOT_A_TIME,
    ),  # type: ignore[arg-type]
]


@property_settings(400)
@given(st.sampled_from(FIELDS).flatmap(lambda f: st.tuples(st.just(f), f.bad)))
def test_every_bad_constructor_value_is_refused_with_invalid_input(
    drawn: tuple[Field, object],
) -> None:
    """NaN, infinities, floats and bools where an int is meant, unknown enum strings,
    negative sizes and durations, empty or non-string names: each is refused with
    InvalidInput (whose message names the field), whatever the constructor."""
    field, value = drawn
    with pytest.raises(InvalidInput):
        field.build(value)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_each_checked_field_accepts_a_good_value(field: Field) -> None:
    """The table above is not vacuous: each builder works with an ordinary value."""
    field.build(GOOD[field.name])


GOOD: dict[str, object] = {
    "PodSet.count": 2,
    "PodSet.requests": 5,
    "PodSet.name": "w",
    "Node.allocatable": 5,
    "Node.name": "n",
    "Node.unschedulable": True,
    "DeviceSubRequest.count": 3,
    "DeviceSubRequest.mode": "All",
    "DeviceRequest.exactly.count": 1,
    "Device.capacity": "80Gi",
    "Device.attributes": 7,
    "Topology.mode": "preferred",
    "Taint.effect": "NoExecute",
    "Toleration.operator": "Exists",
    "Toleration.effect": "NoSchedule",
    "Toleration.value with Exists": "",
    "LabelRequirement.operator": "NotIn",
    "Gang.priority": -5,
    "Gang.created": -10.5,
    "Gang.runtime_estimate": 0,
    "Gang.min_runtime": 60.0,
    "Gang.checkpoint_interval": 1e-3,
    "Gang.uid": "u",
    "Gang.queue": "q",
    "Gang.pod_sets": (PodSet("w", 1, {}),),
    "QuotaLimit.nominal": 0,
    "QuotaLimit.borrowing_limit": 3,
    "QuotaLimit.lending_limit": 0,
    "Queue.weight": 0.5,
    "Queue.name": "q",
    "Reservation.pods.index": 0,
    "Reservation.admitted_at": 12.5,
}
