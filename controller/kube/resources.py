"""The API resources the controller reads and writes, by group, version and plural."""

from __future__ import annotations

from dataclasses import dataclass

from controller.api.common import GROUP, VERSION


@dataclass(frozen=True, slots=True)
class Resource:
    group: str
    """"" for the core group."""
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        """The URL path: the collection (all namespaces without `namespace`), an object,
        or an object's subresource."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        out = f"{base}/{self.plural}"
        if name is not None:
            out += f"/{name}"
            if sub:
                out += f"/{sub}"
        return out

    def key(self, obj: dict[str, object]) -> str:
        """The cache key: `namespace/name` for namespaced objects, `name` otherwise."""
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ValueError(f"{self.kind}: object without metadata")
        name = str(meta.get("name", ""))
        return f"{meta.get('namespace', '')}/{name}" if self.namespaced else name


NODES = Resource("", "v1", "nodes", "Node", False)
PODS = Resource("", "v1", "pods", "Pod", True)
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
RESOURCE_SLICES = Resource("resource.k8s.io", "v1", "resourceslices", "ResourceSlice", False)
DEVICE_CLASSES = Resource("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", False)
RESOURCE_CLAIMS = Resource("resource.k8s.io", "v1", "resourceclaims", "ResourceClaim", True)
CLAIM_TEMPLATES = Resource(
    "resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", True
)
PRIORITY_CLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False)
GANG_JOBS = Resource(GROUP, VERSION, "gangjobs", "GangJob", True)
QUEUES = Resource(GROUP, VERSION, "queues", "Queue", False)
POD_GROUPS = Resource("scheduling.k8s.io", "v1alpha2", "podgroups", "PodGroup", True)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap", True)
