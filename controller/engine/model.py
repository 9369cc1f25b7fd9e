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

from controller.engine import validation as check
from controller.engine.errors import InvalidInput
from controller.engine.quantity import parse_quantity

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


def qualify(name: str, driver: str) -> str:
    """Qualify an attribute or capacity name with the driver's domain, as DRA does."""
    return name if "/" in name else f"{driver}/{name}"


@dataclass(frozen=True, slots=True)
class Version:
    """A semantic version attribute value (DRA `version`), ordered by semver precedence."""

    text: str

    def __post_init__(self) -> None:
        check.name(self.text, "version")


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class TolerationOperator(StrEnum):
    EQUAL = "Equal"
    EXISTS = "Exists"


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
    """A node taint; enum fields here and below take the enum or its exact string value
    (as API objects carry them) and hold the enum after construction."""

    key: str
    value: str = ""
    effect: TaintEffect | str = TaintEffect.NO_SCHEDULE

    def __post_init__(self) -> None:
        check.name(self.key, "taint.key")
        check.text(self.value, f"taint {self.key}: value")
        effect = check.choice(TaintEffect, self.effect, f"taint {self.key}: effect")
        object.__setattr__(self, "effect", effect)


@dataclass(frozen=True, slots=True)
class Toleration:
    """Kubernetes rules: Exists takes no value; an empty key needs Exists; an empty effect
    matches every effect."""

    key: str = ""
    operator: TolerationOperator | str = TolerationOperator.EQUAL
    value: str = ""
    effect: TaintEffect | str = ""

    def __post_init__(self) -> None:
        where = f"toleration {self.key!r}"
        check.text(self.key, f"{where}: key")
        check.text(self.value, f"{where}: value")
        op = check.choice(TolerationOperator, self.operator, f"{where}: operator")
        object.__setattr__(self, "operator", op)
        if self.effect != "":
            effect = check.choice(TaintEffect, self.effect, f"{where}: effect")
            object.__setattr__(self, "effect", effect)
        if op is TolerationOperator.EXISTS and self.value:
            raise InvalidInput(
                f"{where}: value", f"must be empty with operator Exists, got {self.value!r}"
            )
        if not self.key and op is not TolerationOperator.EXISTS:
            raise InvalidInput(f"{where}: operator", "must be Exists when the key is empty")

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
        check.name(self.name, "node.name")
        where = f"node {self.name}"
        check.resources(self.allocatable, f"{where}: allocatable")
        check.labels(self.labels, f"{where}: labels")
        check.tuple_of(Taint, self.taints, f"{where}: taints")
        check.flag(self.unschedulable, f"{where}: unschedulable")

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
        check.name(self.driver, "device.driver")
        check.name(self.pool, f"device {self.driver}: pool")
        check.name(self.name, f"device {self.driver}/{self.pool}: name")
        where = f"device {self.key_text}"
        check.optional_name(self.node, f"{where}: node")
        check.flag(self.shareable, f"{where}: shareable")
        for fname in ("attributes", "capacity"):
            if not isinstance(getattr(self, fname), Mapping):
                raise InvalidInput(
                    f"{where}: {fname}", f"must be a map, got {getattr(self, fname)!r}"
                )
        for key in (*self.attributes, *self.capacity):
            if not isinstance(key, str) or "/" not in key or not _QUALIFIED.match(key):
                raise InvalidInput(
                    where, f"attribute/capacity name {key!r} must be qualified as domain/name"
                )
        for key, value in self.attributes.items():
            if not isinstance(value, bool | int | str | Version):
                raise InvalidInput(
                    f"{where}: attributes[{key}]",
                    f"must be a bool, int, string or Version, got {value!r}",
                )
        for key, amount in self.capacity.items():
            parse_quantity(amount, where=f"{where}: capacity[{key}]")

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
        check.name(self.name, "resourceSlice.name")
        where = f"resourceSlice {self.name}"
        check.name(self.driver, f"{where}: driver")
        check.name(self.pool, f"{where}: pool")
        check.optional_name(self.node, f"{where}: node")
        check.tuple_of(Device, self.devices, f"{where}: devices")
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
        check.name(self.name, "deviceClass.name")
        check.tuple_of(str, self.selectors, f"deviceClass {self.name}: selectors")


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
        check.name(self.name, "request.name")
        where = f"request {self.name}"
        check.name(self.device_class, f"{where}: deviceClassName")
        check.tuple_of(str, self.selectors, f"{where}: selectors")
        mode = check.choice(AllocationMode, self.mode, f"{where}: allocationMode")
        object.__setattr__(self, "mode", mode)
        least = 1 if mode is AllocationMode.EXACT_COUNT else 0
        check.integer(self.count, f"{where}: count", least, check.INT32_MAX)


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A claim's request: `exactly` one way (a single alternative) or `firstAvailable` ones."""

    name: str
    alternatives: tuple[DeviceSubRequest, ...]
    first_available: bool = False

    def __post_init__(self) -> None:
        check.name(self.name, "request.name")
        check.tuple_of(DeviceSubRequest, self.alternatives, f"request {self.name}: alternatives")
        check.flag(self.first_available, f"request {self.name}: firstAvailable")
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

    def __post_init__(self) -> None:
        check.name(self.attribute, "claim.constraints.matchAttribute")
        check.tuple_of(str, self.requests, "claim.constraints.requests")


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """A ResourceClaim's device part: requests and cross-request constraints."""

    requests: tuple[DeviceRequest, ...]
    constraints: tuple[MatchAttribute, ...] = ()

    def __post_init__(self) -> None:
        check.tuple_of(DeviceRequest, self.requests, "claim.requests")
        check.tuple_of(MatchAttribute, self.constraints, "claim.constraints")
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

    def __post_init__(self) -> None:
        check.name(self.name, "claim.name")
        if not isinstance(self.spec, ClaimSpec):
            raise InvalidInput(
                f"claim {self.name}: spec", f"must be a ClaimSpec, got {self.spec!r}"
            )


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
        check.name(self.name, "podSet.name")
        where = f"podSet {self.name}"
        check.integer(self.count, f"{where}: count", 1, check.INT32_MAX)
        check.resources(self.requests, f"{where}: requests")
        check.tuple_of(PodClaim, self.claims, f"{where}: claims")
        check.labels(self.node_selector, f"{where}: nodeSelector")
        check.tuple_of(Toleration, self.tolerations, f"{where}: tolerations")
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
        check.name(self.key, "topology.key")
        mode = check.choice(TopologyMode, self.mode, f"topology {self.key}: mode")
        object.__setattr__(self, "mode", mode)
        check.flag(self.device_attribute, f"topology {self.key}: deviceAttribute")
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
        check.name(self.uid, f"{where}: uid")
        check.name(self.name, f"gang {self.uid}: name")
        check.name(self.namespace, f"gang {self.uid}: namespace")
        check.name(self.queue, f"{where}: queue")
        check.integer(self.priority, f"{where}: priority", -check.INT32_MAX - 1, check.INT32_MAX)
        check.number(self.created, f"{where}: created")
        check.optional_number(self.runtime_estimate, f"{where}: runtime_estimate", 0)
        check.number(self.min_runtime, f"{where}: min_runtime", 0)
        check.optional_number(
            self.checkpoint_interval, f"{where}: checkpoint_interval", positive=True
        )
        if self.topology is not None and not isinstance(self.topology, Topology):
            raise InvalidInput(f"{where}: topology", f"must be a Topology, got {self.topology!r}")
        check.tuple_of(PodSet, self.pod_sets, f"{where}: podSets")
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
        check.integer(self.nominal, "quota.nominal", 0)
        for fname in ("borrowing_limit", "lending_limit"):
            v = getattr(self, fname)
            if v is not None:
                check.integer(v, f"quota.{fname}", 0)


class LabelOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """Kubernetes rules: In and NotIn need values, Exists and DoesNotExist take none."""

    key: str
    operator: LabelOperator | str
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = "labelSelector.matchExpressions"
        check.name(self.key, f"{where}: key")
        op = check.choice(LabelOperator, self.operator, f"{where}[{self.key}]: operator")
        object.__setattr__(self, "operator", op)
        check.tuple_of(str, self.values, f"{where}[{self.key}]: values")
        if op in (LabelOperator.IN, LabelOperator.NOT_IN) and not self.values:
            raise InvalidInput(f"{where}[{self.key}]: values", f"must not be empty with {op}")
        if op in (LabelOperator.EXISTS, LabelOperator.DOES_NOT_EXIST) and self.values:
            raise InvalidInput(
                f"{where}[{self.key}]: values", f"must be empty with {op}, got {self.values!r}"
            )

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op is LabelOperator.IN:
            return labels.get(self.key) in self.values
        if op is LabelOperator.NOT_IN:
            return labels.get(self.key) not in self.values
        if op is LabelOperator.EXISTS:
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelRequirement, ...] = ()

    def __post_init__(self) -> None:
        check.labels(self.match_labels, "labelSelector.matchLabels")
        check.tuple_of(LabelRequirement, self.match_expressions, "labelSelector.matchExpressions")

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
        check.name(self.name, "queue.name")
        where = f"queue {self.name}"
        check.optional_name(self.parent, f"{where}: parent")
        if self.parent == self.name:
            raise InvalidInput(f"{where}: parent", "a queue cannot be its own parent")
        if not isinstance(self.quota, Mapping):
            raise InvalidInput(f"{where}: quota", f"must be a map, got {self.quota!r}")
        for resource, limit in self.quota.items():
            check.name(resource, f"{where}: quota resource")
            if not isinstance(limit, QuotaLimit):
                raise InvalidInput(
                    f"{where}: quota[{resource}]", f"must be a QuotaLimit, got {limit!r}"
                )
        check.number(self.weight, f"{where}: weight", 0)
        if self.namespace_selector is not None and not isinstance(
            self.namespace_selector, LabelSelector
        ):
            raise InvalidInput(
                f"{where}: namespaceSelector",
                f"must be a LabelSelector, got {self.namespace_selector!r}",
            )
