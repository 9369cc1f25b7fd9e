"""The GangJob custom resource: a multi-pod job admitted all-or-nothing.

The pod template stays permissive (Kubernetes owns PodSpec and keeps growing it);
only the fields Phalanx reads for scheduling are typed and checked here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from controller.api.common import (
    SCHEDULER_NAME,
    ApiModel,
    Conditions,
    DnsLabel,
    DnsSubdomain,
    KubeModel,
    LabelValue,
    ObjectMeta,
    QualifiedName,
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


# Pod template --------------------------------------------------------------------------


class ContainerClaim(KubeModel):
    """A container's use of one of the pod's resource claims (resources.claims[])."""

    name: DnsLabel
    request: str | None = None


class ResourceRequirements(KubeModel):
    requests: ResourceList = {}
    limits: ResourceList = {}
    claims: list[ContainerClaim] = []


class Container(KubeModel):
    """A container: name, image and resources are read; everything else passes through."""

    name: DnsLabel
    image: Annotated[str, Field(min_length=1)]
    resources: ResourceRequirements = ResourceRequirements()


class Toleration(KubeModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
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

    containers: Annotated[list[Container], Field(min_length=1)]
    init_containers: list[Container] = []
    node_selector: dict[QualifiedName, LabelValue] = {}
    tolerations: list[Toleration] = []
    resource_claims: Annotated[
        list[PodResourceClaim], Field(max_length=MAX_POD_RESOURCE_CLAIMS)
    ] = []
    scheduler_name: str | None = None

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
    labels: dict[QualifiedName, LabelValue] = {}
    annotations: dict[str, str] = {}


class PodTemplate(KubeModel):
    metadata: PodTemplateMetadata = PodTemplateMetadata()
    spec: PodSpec


# Spec ----------------------------------------------------------------------------------


class PodSet(ApiModel):
    """A group of identical pods, e.g. the PyTorch master or the workers."""

    name: Annotated[DnsLabel, Field(description="Unique within the job; part of pod names.")]
    replicas: Annotated[int, Field(ge=1, description="Number of pods in this set.")]
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


class AllocatedDevice(ApiModel):
    """One device given to a claim request, named as in ResourceClaim status.allocation."""

    request: str
    driver: str
    pool: str
    device: str


class AdmittedClaim(ApiModel):
    name: Annotated[str, Field(description="The claim's name in the pod spec.")]
    devices: list[AllocatedDevice] = []


class AdmittedPod(ApiModel):
    index: Annotated[int, Field(ge=0)]
    node: str
    claims: list[AdmittedClaim] = []


class AdmittedPodSet(ApiModel):
    name: str
    pods: list[AdmittedPod] = []


class Admission(ApiModel):
    """The commit record: written in one patch, the controller rolls forward from it."""

    admission_id: str
    queue: str
    pod_sets: list[AdmittedPodSet] = []
    quota_charged: ResourceList = {}
    borrowed: ResourceList = {}


GangJobPhase = Literal["Pending", "Admitted", "Running", "Succeeded", "Failed", "Suspended"]


class GangJobStatus(ApiModel):
    conditions: Conditions = []
    admission: Admission | None = None
    restarts: Annotated[int, Field(ge=0)] = 0
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
