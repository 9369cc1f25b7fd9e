"""The resource registry: what the emulator serves, and the per-type rules that differ.

Each `ResourceType` says where a resource lives (group, version, plural, scope), what
discovery shows (kind, short names, subresources) and the few behaviours the real API
server varies by type: whether `metadata.generation` is kept, what a DELETE answers,
which field selectors are indexed, and how a `/status` write treats metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    has_generation: bool = False
    delete_returns_object: bool = False
    """DELETE answers with the object (pods, namespaces, services); others give a Status."""
    field_selectors: tuple[str, ...] = ()
    """Indexed fields beyond metadata.name and metadata.namespace."""
    status_keeps_metadata: bool = False
    """A /status write may change labels and annotations (pods, nodes); else metadata is reset."""
    strict_schema: bool = True
    """Built-in types reject unknown fields under fieldValidation=Strict (CRs use their schema)."""
    custom: bool = False
    storage: str = ""
    """Storage key shared with another API (events.k8s.io Events are core Events)."""
    storage_hash: str = ""
    empty: dict[str, Any] = field(default_factory=dict)
    """How an empty object of this type serialises (the shape of a BOOKMARK's object)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def key(self) -> str:
        """Storage key: one per group and plural, whatever the version."""
        if self.storage:
            return self.storage
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_plural(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
)

BUILTIN: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "Pod",
        "pods",
        True,
        "pod",
        ("po",),
        ("binding", "status"),
        has_generation=True,
        delete_returns_object=True,
        field_selectors=_POD_FIELDS,
        status_keeps_metadata=True,
        storage_hash="xPOwRZ+Yhw8=",
        empty={"spec": {"containers": None}, "status": {}},
    ),
    ResourceType(
        "",
        "v1",
        "Node",
        "nodes",
        False,
        "node",
        ("no",),
        ("status",),
        field_selectors=("spec.unschedulable",),
        status_keeps_metadata=True,
        storage_hash="XwShjMxG9Fs=",
        empty={
            "spec": {},
            "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}, "nodeInfo": {}},
        },
    ),
    ResourceType(
        "",
        "v1",
        "Namespace",
        "namespaces",
        False,
        "namespace",
        ("ns",),
        ("status",),
        delete_returns_object=True,
        field_selectors=("status.phase",),
        status_keeps_metadata=True,
        storage_hash="Q3oi5N2YM8M=",
        empty={"spec": {}, "status": {}},
    ),
    ResourceType(
        "",
        "v1",
        "Service",
        "services",
        True,
        "service",
        ("svc",),
        ("status",),
        delete_returns_object=True,
        status_keeps_metadata=True,
        storage_hash="0/CO1lhkEBI=",
        empty={"spec": {}, "status": {"loadBalancer": {}}},
    ),
    ResourceType(
        "",
        "v1",
        "Event",
        "events",
        True,
        "event",
        ("ev",),
        field_selectors=(
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ),
        storage_hash="r2yiGXH7wu8=",
        empty={
            "involvedObject": {},
            "source": {},
            "firstTimestamp": None,
            "lastTimestamp": None,
            "eventTime": None,
            "reportingComponent": "",
            "reportingInstance": "",
        },
    ),
    ResourceType(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        True,
        "serviceaccount",
        ("sa",),
        storage_hash="pbx9ZvyFpBE=",
    ),
    ResourceType(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        True,
        "configmap",
        ("cm",),
        storage_hash="qFsyl6wFWjQ=",
    ),
    ResourceType("", "v1", "Secret", "secrets", True, "secret", storage_hash="S6u1pOWzb84="),
    ResourceType(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        True,
        "event",
        ("ev",),
        storage_hash="r2yiGXH7wu8=",
        storage="events",
        empty={
            "eventTime": None,
            "deprecatedSource": {},
            "deprecatedFirstTimestamp": None,
            "deprecatedLastTimestamp": None,
        },
    ),
    ResourceType(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        True,
        "lease",
        storage_hash="gqkMMb/YqFM=",
        empty={"spec": {}},
    ),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "DeviceClass",
        "deviceclasses",
        False,
        "deviceclass",
        has_generation=True,
        storage_hash="Yk+ZHTrpQSw=",
        empty={"spec": {}},
    ),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "ResourceSlice",
        "resourceslices",
        False,
        "resourceslice",
        has_generation=True,
        field_selectors=("spec.nodeName", "spec.driver"),
        storage_hash="IECvOcO76kw=",
        empty={
            "spec": {"driver": "", "pool": {"name": "", "generation": 0, "resourceSliceCount": 0}}
        },
    ),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "ResourceClaim",
        "resourceclaims",
        True,
        "resourceclaim",
        subresources=("status",),
        storage_hash="6v/Yr6k0pxU=",
        empty={"spec": {"devices": {}}, "status": {}},
    ),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "ResourceClaimTemplate",
        "resourceclaimtemplates",
        True,
        "resourceclaimtemplate",
        storage_hash="SA/T5GOj6xo=",
        empty={"spec": {"metadata": {}, "spec": {"devices": {}}}},
    ),
    ResourceType(
        "scheduling.k8s.io",
        "v1alpha2",
        "PodGroup",
        "podgroups",
        True,
        "podgroup",
        subresources=("status",),
        storage_hash="YYgX3v5V204=",
        empty={"spec": {"podGroupTemplateRef": None, "schedulingPolicy": {}}, "status": {}},
    ),
    ResourceType(
        "scheduling.k8s.io",
        "v1alpha2",
        "Workload",
        "workloads",
        True,
        "workload",
        storage_hash="vSX7gJe5Mx8=",
        empty={"spec": {"podGroupTemplates": None}},
    ),
    ResourceType(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        False,
        "priorityclass",
        ("pc",),
        empty={"value": 0},
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        False,
        "validatingwebhookconfiguration",
        has_generation=True,
    ),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        False,
        "mutatingwebhookconfiguration",
        has_generation=True,
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        "customresourcedefinition",
        ("crd", "crds"),
        ("status",),
        has_generation=True,
        storage_hash="jfWCUB31mvA=",
        empty={"spec": {}, "status": {}},
    ),
)


class Registry:
    """Served resources by (group, version, plural); CRDs add and remove entries."""

    def __init__(self) -> None:
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        for rt in BUILTIN:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._by_path[(rt.group, rt.version, rt.plural)] = rt

    def remove(self, group: str, version: str, plural: str) -> None:
        self._by_path.pop((group, version, plural), None)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        for rt in self._by_path.values():
            if rt.group == group and rt.kind == kind:
                return rt
        return None

    def all(self) -> list[ResourceType]:
        return list(self._by_path.values())

    def group_versions(self) -> dict[str, list[str]]:
        """Named groups and their versions (the core group is served under /api)."""
        groups: dict[str, list[str]] = {}
        for group, version, _ in self._by_path:
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self._by_path.items() if g == group and v == version]
