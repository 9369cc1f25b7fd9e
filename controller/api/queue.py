"""The Queue custom resource: a node of the cluster-wide quota tree.

Per-object rules live on the model; rules that span queues (a missing parent, a cycle)
need the whole set and are checked by `validate_queue_tree`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema, model_validator

from controller.api.common import (
    DEVICE_QUOTA_PREFIX,
    NAME_PART_FRAGMENT,
    QUALIFIED_NAME_MAX,
    SUBDOMAIN_FRAGMENT,
    ApiModel,
    Conditions,
    DnsSubdomain,
    LabelSelector,
    ObjectMeta,
    Quantity,
    ResourceList,
    cel_rules,
    dns_subdomain_problem,
    parse_quantity,
    qualified_name_problem,
)
from controller.api.errors import FieldProblem, show

KIND = "Queue"
PLURAL = "queues"

STANDARD_QUOTA_RESOURCES = ("cpu", "memory", "pods", "ephemeral-storage")
MAX_QUOTA_ITEMS = 64
"""Bounds the CEL uniqueness rule's cost, which the API server estimates per list size."""
MAX_POLICY_PARAMS = 64

QUOTA_RESOURCE_PATTERN = (
    rf"^({'|'.join(STANDARD_QUOTA_RESOURCES)}"
    rf"|{DEVICE_QUOTA_PREFIX}{SUBDOMAIN_FRAGMENT}"
    rf"|{SUBDOMAIN_FRAGMENT}/{NAME_PART_FRAGMENT})$"
)

DEVICE_QUOTA_PATTERN = rf"^{DEVICE_QUOTA_PREFIX}{SUBDOMAIN_FRAGMENT}$"


def quota_resource_problem(value: str) -> str | None:
    """Why `value` cannot be a quota resource, or None if it can."""
    if value in STANDARD_QUOTA_RESOURCES:
        return None
    if value.startswith(DEVICE_QUOTA_PREFIX):
        device_class = value.removeprefix(DEVICE_QUOTA_PREFIX)
        if dns_subdomain_problem(device_class):
            return "the DeviceClass name after 'devices/' must be a DNS subdomain"
        return None
    if "/" in value and not qualified_name_problem(value):
        domain = value.split("/", 1)[0]
        if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
            return (
                "the kubernetes.io domain is Kubernetes' own: an extended resource is named "
                "in its vendor's domain, such as nvidia.com/gpu"
            )
        if domain.startswith("requests."):
            return "name the resource itself, without the 'requests.' prefix of ResourceQuota"
        return None
    return (
        "unknown quota resource: use cpu, memory, pods, ephemeral-storage, an extended "
        "resource with a domain such as nvidia.com/gpu, or devices/<deviceClassName>"
    )


def _check_quota_resource(value: str) -> str:
    problem = quota_resource_problem(value)
    if problem:
        raise ValueError(f"{problem} (got {show(value)})")
    return value


QuotaResource = Annotated[
    str,
    AfterValidator(_check_quota_resource),
    WithJsonSchema(
        {"type": "string", "maxLength": QUALIFIED_NAME_MAX, "pattern": QUOTA_RESOURCE_PATTERN}
    ),
]


class QuotaItem(ApiModel):
    """Quota for one resource: what the queue owns, may borrow and may lend."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                # The pattern alone would also let devices/<not a subdomain> through.
                f"!self.resource.startsWith({DEVICE_QUOTA_PREFIX!r})"
                f" || self.resource.matches({DEVICE_QUOTA_PATTERN!r})",
                "the DeviceClass name after 'devices/' must be a DNS subdomain",
            ),
            (
                "!has(self.lendingLimit) || !isQuantity(string(self.lendingLimit))"
                " || !isQuantity(string(self.nominal))"
                " || quantity(string(self.lendingLimit))"
                ".compareTo(quantity(string(self.nominal))) <= 0",
                "lendingLimit must not exceed nominal",
            ),
        )
    )

    resource: QuotaResource
    nominal: Annotated[Quantity, Field(description="Quota the queue owns.")]
    borrowing_limit: Annotated[
        Quantity | None,
        Field(description="How far above nominal the queue may borrow; absent: no limit."),
    ] = None
    lending_limit: Annotated[
        Quantity | None,
        Field(description="How much unused nominal siblings may borrow; absent: all of it."),
    ] = None

    @model_validator(mode="after")
    def _lend_at_most_nominal(self) -> QuotaItem:
        if self.lending_limit is not None and parse_quantity(self.lending_limit) > parse_quantity(
            self.nominal
        ):
            raise FieldProblem(
                ("lendingLimit",),
                f"must not exceed nominal {show(self.nominal)} (got {show(self.lending_limit)})",
            )
        return self


def _unique_quota_resources(quota: list[QuotaItem]) -> list[QuotaItem]:
    first: dict[str, int] = {}
    for i, item in enumerate(quota):
        if item.resource in first:
            raise FieldProblem(
                (i, "resource"),
                f"duplicate quota resource {show(item.resource)} "
                f"(also at [{first[item.resource]}])",
            )
        first[item.resource] = i
    return quota


class PolicyChoice(ApiModel):
    """A policy chosen by its registered name (see `phalanx policies`), with parameters.

    Parameters stay an open map here: which ones exist depends on the policy, and
    installed plug-ins add policies, so `queue_policy_selection` checks them against the
    registry (the webhook reports what it finds).
    """

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            description="A registered policy name; `phalanx policies` lists them.",
        ),
    ]
    params: Annotated[
        dict[str, Any],
        Field(
            max_length=MAX_POLICY_PARAMS,
            description="The policy's parameters; absent: its defaults.",
        ),
    ] = {}


class QueuePolicies(ApiModel):
    ordering: Annotated[
        PolicyChoice | None,
        Field(description="Orders this queue's gangs within the turns the cluster gives it."),
    ] = None
    preemption: Annotated[
        PolicyChoice | None,
        Field(description="Chooses victims when this queue's gangs do not fit."),
    ] = None
    placement: Annotated[
        PolicyChoice | None, Field(description="How this queue's gangs are placed.")
    ] = None


class QueueSpec(ApiModel):
    parent: Annotated[
        DnsSubdomain | None, Field(description="The parent Queue; absent for a root of the tree.")
    ] = None
    quota: Annotated[
        list[QuotaItem],
        AfterValidator(_unique_quota_resources),
        Field(
            max_length=MAX_QUOTA_ITEMS,
            json_schema_extra=cel_rules(
                (
                    "self.all(x, self.exists_one(y, y.resource == x.resource))",
                    "quota resources must be unique",
                )
            ),
        ),
    ] = []
    weight: Annotated[
        float, Field(ge=0, allow_inf_nan=False, description="Share of the parent's spare quota.")
    ] = 1.0
    namespace_selector: Annotated[
        LabelSelector | None,
        Field(description="Namespaces whose GangJobs may use this queue; absent: all."),
    ] = None
    policies: Annotated[
        QueuePolicies | None, Field(description="Policies overriding the controller's defaults.")
    ] = None


class QueueStatus(ApiModel):
    usage: ResourceList = {}
    borrowed: ResourceList = {}
    pending_gangs: Annotated[int, Field(ge=0)] = 0
    admitted_gangs: Annotated[int, Field(ge=0)] = 0
    conditions: Conditions = []


class Queue(ApiModel):
    """A Queue object (cluster-scoped; group phalanx.dev, v1alpha1)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "!has(self.spec) || !has(self.spec.parent)"
                " || self.spec.parent != self.metadata.name",
                "a queue cannot be its own parent",
            )
        )
    )

    api_version: Literal["phalanx.dev/v1alpha1"]
    kind: Literal["Queue"]
    metadata: ObjectMeta
    spec: QueueSpec = QueueSpec()
    status: QueueStatus | None = None

    @model_validator(mode="after")
    def _object_rules(self) -> Queue:
        if self.metadata.namespace is not None:
            raise FieldProblem(
                ("metadata", "namespace"), "must not be set: Queue is cluster-scoped"
            )
        if self.spec.parent == self.metadata.name:
            raise FieldProblem(
                ("spec", "parent"),
                f"a queue cannot be its own parent (got {show(self.spec.parent)})",
            )
        return self

    @classmethod
    def from_manifest(cls, data: Any) -> Queue:
        """Validate a manifest as the API server reads it: camelCase keys only."""
        return cls.model_validate(data, by_alias=True, by_name=False)


class QueueTreeError(ValueError):
    """Queues that cannot form a tree; `problems` has one line per missing parent or cycle."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def validate_queue_tree(queues: list[Queue]) -> None:
    """Check that the queues form a forest: unique names, parents exist, no cycles."""
    problems: list[str] = []
    parent_of: dict[str, str | None] = {}
    for queue in queues:
        name = queue.metadata.name
        if name in parent_of:
            problems.append(f"queue {name!r} is defined more than once")
        parent_of[name] = queue.spec.parent
    for name, parent in sorted(parent_of.items()):
        if parent is not None and parent not in parent_of:
            problems.append(f"queue {name!r}: parent queue {parent!r} does not exist")
    done: set[str] = set()
    for start in sorted(parent_of):
        path: list[str] = []
        node: str | None = start
        while node is not None and node in parent_of and node not in done:
            if node in path:
                cycle = path[path.index(node) :]
                first = cycle.index(min(cycle))
                cycle = cycle[first:] + cycle[:first]
                problems.append("queue cycle: " + " -> ".join([*cycle, cycle[0]]))
                break
            path.append(node)
            node = parent_of[node]
        done.update(path)
    if problems:
        raise QueueTreeError(problems)
