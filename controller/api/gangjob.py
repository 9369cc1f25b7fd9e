"""The GangJob custom resource: a multi-pod job admitted all-or-nothing.

The pod template stays permissive (Kubernetes owns PodSpec and keeps growing it);
only the fields Phalanx reads for scheduling are typed and checked here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from controller.api.common import (
    DNS_LABEL_MAX,
    DNS_SUBDOMAIN_MAX,
    LABEL_VALUE_MAX,
    QUALIFIED_NAME_MAX,
    SCHEDULER_NAME,
    Annotations,
    ApiModel,
    Conditions,
    DnsLabel,
    DnsSubdomain,
    KubeModel,
    Labels,
    ObjectMeta,
    ResourceList,
    cel_rules,
    device_attribute_problem,
    qualified_name_problem,
)
from controller.api.errors import FieldProblem, show

KIND = "GangJob"
PLURAL = "gangjobs"

MAX_POD_SETS = 16
"""Bounds the CEL uniqueness rule's cost, which the API server estimates per list size."""

MAX_POD_RESOURCE_CLAIMS = 32
"""Bounds the cost estimate of the per-claim CEL rule (podSets x resourceClaims)."""

MAX_REPLICAS = 4096
"""Pods in one pod set; status lists each, and the object must stay well under etcd's limit."""
MAX_CONTAINERS = 64
MAX_TOLERATIONS = 64
IMAGE_MAX_LENGTH = 1024
DEVICE_REQUEST_MAX_LENGTH = 2 * DNS_LABEL_MAX + 1
"""A DRA request name, or `request/subrequest` for a firstAvailable alternative."""
DRIVER_MAX_LENGTH = 63
"""DRA driver names are DNS subdomains of at most 63 characters."""
MAX_ALLOCATED_DEVICES = 32
"""resource.k8s.io/v1 caps a claim's allocation results at 32 devices."""


def _name(max_length: int, description: str | None = None) -> Any:
    """A plain string field bounded to `max_length`, for names Phalanx itself writes."""
    return Field(max_length=max_length, description=description)


# Pod template --------------------------------------------------------------------------


class ContainerClaim(KubeModel):
    """A container's use of one of the pod's resource claims (resources.claims[])."""

    name: DnsLabel
    request: Annotated[str | None, _name(DEVICE_REQUEST_MAX_LENGTH)] = None


class ResourceRequirements(KubeModel):
    requests: ResourceList = {}
    limits: ResourceList = {}
    claims: Annotated[list[ContainerClaim], Field(max_length=MAX_POD_RESOURCE_CLAIMS)] = []


class Container(KubeModel):
    """A container: name, image and resources are read; everything else passes through."""

    name: DnsLabel
    image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX_LENGTH)]
    resources: ResourceRequirements = ResourceRequirements()


class Toleration(KubeModel):
    key: Annotated[str | None, _name(QUALIFIED_NAME_MAX)] = None
    operator: Literal["Exists", "Equal"] | None = None
    value: Annotated[str | None, _name(LABEL_VALUE_MAX)] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise FieldProblem(("value",), "must be empty when operator is Exists")
        return self


class PodResourceClaim(KubeModel):
    """A pod's DRA claim: stamped out from a template per pod, or one shared claim by name."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "has(self.resourceClaimName) != has(self.resourceClaimTemplateName)",
                "exactly one of resourceClaimName and resourceClaimTemplateName must be set",
            )
        )
    )

    name: DnsLabel
    resource_claim_template_name: DnsSubdomain | None = None
    resource_claim_name: DnsSubdomain | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> PodResourceClaim:
        if (self.resource_claim_name is None) == (self.resource_claim_template_name is None):
            raise FieldProblem(
                (),
                "exactly one of resourceClaimName and resourceClaimTemplateName must be set",
            )
        return self


class PodSpec(KubeModel):
    """A PodSpec; Phalanx types what it schedules with and preserves the rest untouched."""

    containers: Annotated[list[Container], Field(min_length=1, max_length=MAX_CONTAINERS)]
    init_containers: Annotated[list[Container], Field(max_length=MAX_CONTAINERS)] = []
    node_selector: Labels = {}
    tolerations: Annotated[list[Toleration], Field(max_length=MAX_TOLERATIONS)] = []
    resource_claims: Annotated[
        list[PodResourceClaim], Field(max_length=MAX_POD_RESOURCE_CLAIMS)
    ] = []
    scheduler_name: Annotated[str | None, _name(DNS_SUBDOMAIN_MAX)] = None

    @field_validator("scheduler_name")
    @classmethod
    def _ours(cls, value: str | None) -> str | None:
        # Pods of a gang are bound by Phalanx; another scheduler would race it.
        if value is not None and value != SCHEDULER_NAME:
            raise ValueError(
                f"must be {SCHEDULER_NAME!r} or left out (Phalanx sets it), got {show(value)}"
            )
        return value

    @model_validator(mode="after")
    def _claims_exist(self) -> PodSpec:
        names = [claim.name for claim in self.resource_claims]
        for i, claim in enumerate(self.resource_claims):
            if claim.name in names[:i]:
                raise FieldProblem(
                    ("resourceClaims", i, "name"), f"duplicate claim name {show(claim.name)}"
                )
        for field, containers in (
            ("initContainers", self.init_containers),
            ("containers", self.containers),
        ):
            for i, container in enumerate(containers):
                for j, used in enumerate(container.resources.claims):
                    if used.name not in names:
                        raise FieldProblem(
                            (field, i, "resources", "claims", j, "name"),
                            f"no pod resourceClaims entry named {show(used.name)}",
                        )
        return self


class PodTemplateMetadata(KubeModel):
    labels: Labels = {}
    annotations: Annotations = {}


class PodTemplate(KubeModel):
    metadata: PodTemplateMetadata = PodTemplateMetadata()
    spec: PodSpec


# Spec ----------------------------------------------------------------------------------


class PodSet(ApiModel):
    """A group of identical pods, e.g. the PyTorch master or the workers."""

    name: Annotated[DnsLabel, Field(description="Unique within the job; part of pod names.")]
    replicas: Annotated[
        int, Field(ge=1, le=MAX_REPLICAS, description="Number of pods in this set.")
    ]
    template: PodTemplate


class FailurePolicy(ApiModel):
    max_restarts: Annotated[
        int,
        Field(ge=0, description="How often the whole gang is restarted after a pod fails."),
    ] = 0


class Topology(ApiModel):
    """Keep the gang within one topology domain (a rack, an NVLink domain, ...)."""

    mode: Annotated[
        Literal["required", "preferred"],
        Field(description="required: admit only within one domain; preferred: try first."),
    ]
    key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=316,
            description="A node label key, or a fully qualified device attribute domain/name.",
        ),
    ]
    source: Literal["nodeLabel", "deviceAttribute"] = "nodeLabel"

    @model_validator(mode="after")
    def _key_fits_source(self) -> Topology:
        if self.source == "deviceAttribute":
            problem = device_attribute_problem(self.key)
        else:
            problem = qualified_name_problem(self.key) and "must be a node label key"
        if problem:
            raise FieldProblem(("key",), f"{problem} (got {show(self.key)})")
        return self


def _unique_pod_set_names(pod_sets: list[PodSet]) -> list[PodSet]:
    first: dict[str, int] = {}
    for i, pod_set in enumerate(pod_sets):
        if pod_set.name in first:
            raise FieldProblem(
                (i, "name"),
                f"duplicate pod set name {show(pod_set.name)} (also at [{first[pod_set.name]}])",
            )
        first[pod_set.name] = i
    return pod_sets


class GangJobSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "!(has(self.priority) && has(self.priorityClassName))",
                "set either priority or priorityClassName, not both",
            )
        )
    )

    pod_sets: Annotated[
        list[PodSet],
        AfterValidator(_unique_pod_set_names),
        Field(
            min_length=1,
            max_length=MAX_POD_SETS,
            description="The pods of the gang; all are admitted together or none is.",
            json_schema_extra=cel_rules(
                (
                    "self.all(x, self.exists_one(y, y.name == x.name))",
                    "podSets names must be unique",
                )
            ),
        ),
    ]
    queue_name: Annotated[DnsSubdomain, Field(description="The leaf Queue that pays for the job.")]
    priority: Annotated[
        int | None, Field(ge=-(2**31), le=2**31 - 1, description="Higher is admitted first.")
    ] = None
    priority_class_name: Annotated[
        DnsSubdomain | None, Field(description="A PriorityClass to take the priority from.")
    ] = None
    failure_policy: FailurePolicy = FailurePolicy()
    ready_timeout_seconds: Annotated[
        int | None, Field(ge=1, description="Restart the gang if not all pods are ready in time.")
    ] = None
    topology: Annotated[
        Topology | None, Field(description="Keep the gang within one topology domain.")
    ] = None
    master_port: Annotated[
        int | None,
        Field(
            ge=1,
            le=65535,
            description="MASTER_PORT of the torchrun environment (default 29500).",
        ),
    ] = None
    suspend: Annotated[
        bool, Field(description="A suspended job is not admitted; an admitted one is released.")
    ] = False
    runtime_estimate_seconds: Annotated[
        float | None,
        Field(
            ge=0,
            allow_inf_nan=False,
            description="Expected run time; shortest-job-first and backfilling use it.",
        ),
    ] = None
    min_runtime_seconds: Annotated[
        float | None,
        Field(
            ge=0,
            allow_inf_nan=False,
            description="Seconds a run is protected from cost-aware preemption once admitted.",
        ),
    ] = None
    checkpoint_interval_seconds: Annotated[
        float | None,
        Field(
            gt=0,
            allow_inf_nan=False,
            description="Seconds between checkpoints; work since the last one is lost "
            "on preemption.",
        ),
    ] = None

    @model_validator(mode="after")
    def _one_priority_source(self) -> GangJobSpec:
        if self.priority is not None and self.priority_class_name is not None:
            raise FieldProblem(
                ("priorityClassName",), "cannot be set together with priority; set one of them"
            )
        return self


# Status --------------------------------------------------------------------------------


SHARED_DEVICE_FIELDS = ("request", "driver", "pool")
"""Fields of an allocated device that its claim may give once for all its devices."""


class AllocatedDevice(ApiModel):
    """One device given to a claim request, named as in ResourceClaim status.allocation.
    A request, driver or pool left out is the claim's."""

    request: Annotated[
        str | None, _name(DEVICE_REQUEST_MAX_LENGTH, "The request; the claim's if left out.")
    ] = None
    driver: Annotated[
        str | None, _name(DRIVER_MAX_LENGTH, "The driver; the claim's if left out.")
    ] = None
    pool: Annotated[str | None, _name(DNS_SUBDOMAIN_MAX, "The pool; the claim's if left out.")] = (
        None
    )
    device: Annotated[str, _name(DNS_LABEL_MAX)]


class AdmittedClaim(ApiModel):
    """A claim's devices. The request, driver and pool all its devices share are given
    once here (the record of a gang of thousands of many-device pods must fit in one
    object, at most 1.5 MiB in etcd)."""

    name: Annotated[str, _name(DNS_LABEL_MAX, "The claim's name in the pod spec.")]
    request: Annotated[
        str | None, _name(DEVICE_REQUEST_MAX_LENGTH, "The request of every device.")
    ] = None
    driver: Annotated[str | None, _name(DRIVER_MAX_LENGTH, "The driver of every device.")] = None
    pool: Annotated[str | None, _name(DNS_SUBDOMAIN_MAX, "The pool of every device.")] = None
    devices: Annotated[list[AllocatedDevice], Field(max_length=MAX_ALLOCATED_DEVICES)] = []

    @model_validator(mode="after")
    def _every_device_named_in_full(self) -> AdmittedClaim:
        for i, device in enumerate(self.devices):
            for field in SHARED_DEVICE_FIELDS:
                if getattr(device, field) is None and getattr(self, field) is None:
                    raise FieldProblem(
                        ("devices", i, field), "required when the claim does not give it"
                    )
        return self


class AdmittedPod(ApiModel):
    index: Annotated[int, Field(ge=0)]
    node: Annotated[str, _name(DNS_SUBDOMAIN_MAX)]
    claims: Annotated[list[AdmittedClaim], Field(max_length=MAX_POD_RESOURCE_CLAIMS)] = []


class AdmittedPodSet(ApiModel):
    name: Annotated[str, _name(DNS_LABEL_MAX)]
    pods: Annotated[list[AdmittedPod], Field(max_length=MAX_REPLICAS)] = []


class Admission(ApiModel):
    """The commit record: written in one patch, the controller rolls forward from it."""

    admission_id: Annotated[str, _name(DNS_SUBDOMAIN_MAX)]
    queue: Annotated[str, _name(DNS_SUBDOMAIN_MAX)]
    pod_sets: Annotated[list[AdmittedPodSet], Field(max_length=MAX_POD_SETS)] = []
    quota_charged: ResourceList = {}
    borrowed: ResourceList = {}


GangJobPhase = Literal["Pending", "Admitted", "Running", "Succeeded", "Failed", "Suspended"]


class RequeueState(ApiModel):
    """A gang released for not becoming ready waits this long before its next admission."""

    count: Annotated[int, Field(ge=1, description="Readiness timeouts in a row.")]
    requeue_at: Annotated[
        datetime,
        Field(strict=False, description="Not admitted again before this time (RFC 3339)."),
    ]


class GangJobStatus(ApiModel):
    conditions: Conditions = []
    admission: Admission | None = None
    restarts: Annotated[int, Field(ge=0)] = 0
    requeue_state: RequeueState | None = None
    phase: GangJobPhase | None = None


class GangJob(ApiModel):
    """A GangJob object as stored by the API server (group phalanx.dev, v1alpha1)."""

    api_version: Literal["phalanx.dev/v1alpha1"]
    kind: Literal["GangJob"]
    metadata: ObjectMeta
    spec: GangJobSpec
    status: GangJobStatus | None = None

    @classmethod
    def from_manifest(cls, data: Any) -> GangJob:
        """Validate a manifest as the API server reads it: camelCase keys only."""
        return cls.model_validate(data, by_alias=True, by_name=False)
