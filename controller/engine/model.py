"""Plain, immutable engine types: what the controller and the simulator feed the engine.

Resources are integers in canonical units (cpu in millicores, memory in bytes, counts
for pods, extended resources and `devices/<class>`), so arithmetic is exact and fast.
Constructors validate their input and raise `InvalidInput` naming the field at fault,
so a malformed object never reaches the decision core.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from controller.engine.errors import InvalidInput

Resources = Mapping[str, int]
"""Resource name -> integer amount in canonical units."""

AttributeValue = bool | int | str
"""A DRA device attribute: bool, int, string, or a semantic version kept as `Version`."""

DEVICE_QUOTA_PREFIX = "devices/"
_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def device_quota_resource(device_class: str) -> str:
    """The quota resource that counts devices of a DeviceClass."""
    return DEVICE_QUOTA_PREFIX + device_class


def _check_name(value: str, where: str) -> None:
    if not value:
        raise InvalidInput(where, "must not be empty")


def _check_resources(res: Resources, where: str) -> None:
    for name, amount in res.items():
        if not name:
            raise InvalidInput(where, "resource name must not be empty")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise InvalidInput(f"{where}[{name}]", f"must be an integer, got {amount!r}")
        if amount < 0:
            raise InvalidInput(f"{where}[{name}]", f"must not be negative, got {amount}")


def qualify(name: str, driver: str) -> str:
    """Qualify an attribute or capacity name with the driver's domain, as DRA does."""
    return name if "/" in name else f"{driver}/{name}"


@dataclass(frozen=True, slots=True)
class Version:
    """A semantic version attribute value (DRA `version`), ordered by semver precedence."""

    text: str


def attribute_identity(value: AttributeValue | Version) -> tuple[str, object]:
    """A DRA attribute value with its type: (kind, value), kind one of bool, int, string,
    version. Python has True == 1 (same hash), but DRA values are typed, so every key,
    group or comparison of attribute values goes through this. Versions compare by exact
    text, as Kubernetes' matchAttribute does. Anything else is not a DRA value.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", int(value))
    if isinstance(value, str):
        return ("string", str(value))
    if isinstance(value, Version):
        return ("version", value.text)
    raise InvalidInput(
        "attribute value", f"{value!r} is not a DRA attribute (bool, int, string or version)"
    )


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes toleration matching: empty key with Exists tolerates everything."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True, slots=True)
class Node:
    """A schedulable node; `allocatable` covers cpu, memory, pods and extended resources."""

    name: str
    allocatable: Resources
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, "node.name")
        _check_resources(self.allocatable, f"node {self.name}: allocatable")

    def blocking_taints(self, tolerations: tuple[Toleration, ...]) -> list[Taint]:
        """Taints with a scheduling effect that no toleration covers."""
        return [
            t
            for t in self.taints
            if t.effect in ("NoSchedule", "NoExecute")
            and not any(tol.tolerates(t) for tol in tolerations)
        ]


@dataclass(frozen=True, slots=True)
class Device:
    """One DRA device from a ResourceSlice, identified by (driver, pool, name).

    Attribute and capacity names are fully qualified (`domain/name`); `node` is None for
    devices reachable from every node (network-attached, `allNodes` slices).
    """

    driver: str
    pool: str
    name: str
    node: str | None
    attributes: Mapping[str, AttributeValue | Version] = field(default_factory=dict)
    capacity: Mapping[str, str] = field(default_factory=dict)
    shareable: bool = False

    def __post_init__(self) -> None:
        _check_name(self.driver, "device.driver")
        _check_name(self.pool, f"device {self.driver}: pool")
        _check_name(self.name, f"device {self.driver}/{self.pool}: name")
        for key in (*self.attributes, *self.capacity):
            if "/" not in key or not _QUALIFIED.match(key):
                raise InvalidInput(
                    f"device {self.key_text}",
                    f"attribute/capacity name {key!r} must be qualified as domain/name",
                )
        for key, value in self.attributes.items():
            try:
                attribute_identity(value)
            except InvalidInput as err:
                raise InvalidInput(f"device {self.key_text}: attributes[{key}]", err.what) from None

    @property
    def key(self) -> DeviceKey:
        return (self.driver, self.pool, self.name)

    @property
    def key_text(self) -> str:
        return f"{self.driver}/{self.pool}/{self.name}"


DeviceKey = tuple[str, str, str]
"""(driver, pool, device name): how resource.k8s.io/v1 names a device in an allocation."""


@dataclass(frozen=True, slots=True)
class ResourceSlice:
    """A published slice of devices; one slice's devices share driver, pool and node."""

    name: str
    driver: str
    pool: str
    node: str | None
    devices: tuple[Device, ...]

    @staticmethod
    def node_local(
        name: str,
        driver: str,
        node: str,
        count: int,
        attributes: Mapping[str, AttributeValue | Version],
        capacity: Mapping[str, str],
    ) -> ResourceSlice:
        """`count` identical devices `gpu-0..` of one node, in a pool named after the node;
        each also gets its `<driver>/index` attribute."""
        devices = tuple(
            Device(
                driver,
                node,
                f"gpu-{i}",
                node,
                attributes={**attributes, f"{driver}/index": i},
                capacity=capacity,
            )
            for i in range(count)
        )
        return ResourceSlice(name, driver, node, node, devices)

    def __post_init__(self) -> None:
        _check_name(self.name, "resourceSlice.name")
        seen: set[str] = set()
        for d in self.devices:
            if d.driver != self.driver or d.pool != self.pool or d.node != self.node:
                raise InvalidInput(
                    f"resourceSlice {self.name}: device {d.name}",
                    "driver, pool and node must match the slice",
                )
            if d.name in seen:
                raise InvalidInput(
                    f"resourceSlice {self.name}", f"device name {d.name!r} appears twice"
                )
            seen.add(d.name)


@dataclass(frozen=True, slots=True)
class DeviceClass:
    """A DeviceClass: CEL selectors that every device of the class must satisfy."""

    name: str
    selectors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "deviceClass.name")


class AllocationMode(StrEnum):
    EXACT_COUNT = "ExactCount"
    ALL = "All"


@dataclass(frozen=True, slots=True)
class DeviceSubRequest:
    """One concrete way to satisfy a request: a class, extra selectors, mode and count."""

    name: str
    device_class: str
    selectors: tuple[str, ...] = ()
    mode: AllocationMode = AllocationMode.EXACT_COUNT
    count: int = 1

    def __post_init__(self) -> None:
        _check_name(self.name, "request.name")
        _check_name(self.device_class, f"request {self.name}: deviceClassName")
        if self.mode is AllocationMode.EXACT_COUNT and self.count < 1:
            raise InvalidInput(f"request {self.name}: count", f"must be >= 1, got {self.count}")


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A claim's request: `exactly` one way (a single alternative) or `firstAvailable` ones."""

    name: str
    alternatives: tuple[DeviceSubRequest, ...]
    first_available: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name, "request.name")
        if not self.alternatives:
            raise InvalidInput(f"request {self.name}", "needs `exactly` or `firstAvailable`")
        if not self.first_available and len(self.alternatives) != 1:
            raise InvalidInput(
                f"request {self.name}", "`exactly` takes one device selection, not a list"
            )

    @staticmethod
    def exactly(
        name: str,
        device_class: str,
        count: int = 1,
        selectors: tuple[str, ...] = (),
        mode: AllocationMode = AllocationMode.EXACT_COUNT,
    ) -> DeviceRequest:
        return DeviceRequest(name, (DeviceSubRequest(name, device_class, selectors, mode, count),))


@dataclass(frozen=True, slots=True)
class MatchAttribute:
    """All devices of the named requests (all requests if empty) share this attribute value."""

    attribute: str
    requests: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """A ResourceClaim's device part: requests and cross-request constraints."""

    requests: tuple[DeviceRequest, ...]
    constraints: tuple[MatchAttribute, ...] = ()

    def __post_init__(self) -> None:
        names = [r.name for r in self.requests]
        if len(set(names)) != len(names):
            raise InvalidInput("claim.requests", f"request names must be unique, got {names}")
        for c in self.constraints:
            if "/" not in c.attribute:
                raise InvalidInput(
                    "claim.constraints.matchAttribute",
                    f"{c.attribute!r} must be qualified as domain/name",
                )
            for r in c.requests:
                if r not in names:
                    raise InvalidInput(
                        "claim.constraints.requests", f"{r!r} is not a request of this claim"
                    )


@dataclass(frozen=True, slots=True)
class PodClaim:
    """A claim every pod of a pod set gets its own copy of (from a ResourceClaimTemplate)."""

    name: str
    spec: ClaimSpec


@dataclass(frozen=True, slots=True)
class PodSet:
    """`count` identical pods: per-pod requests, claims and node constraints."""

    name: str
    count: int
    requests: Resources
    claims: tuple[PodClaim, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "podSet.name")
        if self.count < 1:
            raise InvalidInput(f"podSet {self.name}: count", f"must be >= 1, got {self.count}")
        _check_resources(self.requests, f"podSet {self.name}: requests")
        claim_names = [c.name for c in self.claims]
        if len(set(claim_names)) != len(claim_names):
            raise InvalidInput(f"podSet {self.name}: claims", "claim names must be unique")


class TopologyMode(StrEnum):
    REQUIRED = "required"
    PREFERRED = "preferred"


@dataclass(frozen=True, slots=True)
class Topology:
    """Keep a gang in one domain: nodes sharing a label value, or devices an attribute value."""

    key: str
    mode: TopologyMode = TopologyMode.REQUIRED
    device_attribute: bool = False

    def __post_init__(self) -> None:
        _check_name(self.key, "topology.key")
        if self.device_attribute and "/" not in self.key:
            raise InvalidInput("topology.key", "a device attribute must be qualified domain/name")


@dataclass(frozen=True, slots=True)
class Gang:
    """A multi-pod job admitted all-or-nothing."""

    uid: str
    name: str
    namespace: str
    queue: str
    pod_sets: tuple[PodSet, ...]
    priority: int = 0
    created: float = 0.0
    topology: Topology | None = None
    runtime_estimate: float | None = None
    min_runtime: float = 0.0
    """Seconds a run is protected from preemption once admitted."""
    checkpoint_interval: float | None = None
    """Seconds between checkpoints; work since the last one is lost on preemption."""

    def __post_init__(self) -> None:
        where = f"gang {self.namespace}/{self.name}"
        _check_name(self.uid, f"{where}: uid")
        for fname in ("runtime_estimate", "min_runtime", "checkpoint_interval"):
            v = getattr(self, fname)
            if v is not None and not v >= 0:
                raise InvalidInput(f"{where}: {fname}", f"must be >= 0, got {v}")
        if self.checkpoint_interval == 0:
            raise InvalidInput(f"{where}: checkpoint_interval", "must be > 0 when set")
        _check_name(self.queue, f"{where}: queue")
        if not self.pod_sets:
            raise InvalidInput(f"{where}: podSets", "needs at least one pod set")
        names = [p.name for p in self.pod_sets]
        if len(set(names)) != len(names):
            raise InvalidInput(f"{where}: podSets", f"pod set names must be unique, got {names}")

    @property
    def pod_count(self) -> int:
        return sum(p.count for p in self.pod_sets)

    @property
    def order_key(self) -> tuple[int, float, str]:
        """Stable tie-break used everywhere: higher priority, then older, then uid."""
        return (-self.priority, self.created, self.uid)


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """Quota of one resource in one queue; None limits mean unlimited."""

    nominal: int = 0
    borrowing_limit: int | None = None
    lending_limit: int | None = None

    def __post_init__(self) -> None:
        for fname in ("nominal", "borrowing_limit", "lending_limit"):
            v = getattr(self, fname)
            if v is not None and v < 0:
                raise InvalidInput(f"quota.{fname}", f"must not be negative, got {v}")


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        raise InvalidInput("labelSelector.matchExpressions", f"unknown operator {self.operator!r}")


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )


@dataclass(frozen=True, slots=True)
class Queue:
    """A node of the queue tree; only leaves take gangs, inner queues pool quota."""

    name: str
    parent: str | None = None
    quota: Mapping[str, QuotaLimit] = field(default_factory=dict)
    weight: float = 1.0
    namespace_selector: LabelSelector | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "queue.name")
        if self.parent == self.name:
            raise InvalidInput(f"queue {self.name}: parent", "a queue cannot be its own parent")
        if self.weight < 0:
            raise InvalidInput(f"queue {self.name}: weight", f"must be >= 0, got {self.weight}")
