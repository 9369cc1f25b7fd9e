"""Server-side defaults of the built-in types, as the real API server fills them in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.clock import now_time

Obj = dict[str, Any]

_DEFAULT_TOLERATIONS = (
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
)
NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}


def _container(container: Obj) -> None:
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = container.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")


def pod_spec(spec: Obj) -> None:
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            _container(container)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")


def pod_create(pod: Obj) -> None:
    """Defaults plus what admission adds on create (default tolerations, status)."""
    spec = pod.setdefault("spec", {})
    pod_spec(spec)
    tolerations = spec.setdefault("tolerations", [])
    for toleration in _DEFAULT_TOLERATIONS:
        if not any(
            t.get("key") == toleration["key"] and t.get("effect") in (None, "", "NoExecute")
            for t in tolerations
        ):
            tolerations.append(dict(toleration))
    status: Obj = {"phase": "Pending"}
    if spec.get("schedulingGates"):
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": now_time(),
                "reason": "SchedulingGated",
                "message": "Scheduling is blocked due to non-empty scheduling gates",
            }
        ]
    status["qosClass"] = qos_class(spec)
    pod["status"] = status


def qos_class(spec: Obj) -> str:
    requests_seen = False
    guaranteed = True
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if requests or limits:
            requests_seen = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def pod_status(status: Obj) -> None:
    for condition in status.get("conditions") or []:
        condition.setdefault("lastProbeTime", None)
        condition.setdefault("lastTransitionTime", None)


def node(obj: Obj, creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("podCIDR") and not spec.get("podCIDRs"):
        spec["podCIDRs"] = [spec["podCIDR"]]
    if creating and not any(
        t.get("key") == NOT_READY_TAINT["key"] for t in spec.get("taints") or []
    ):
        spec.setdefault("taints", []).append(dict(NOT_READY_TAINT))
    status = obj.setdefault("status", {})
    status.setdefault("daemonEndpoints", {"kubeletEndpoint": {"Port": 0}})
    status.setdefault(
        "nodeInfo",
        {
            k: ""
            for k in (
                "machineID",
                "systemUUID",
                "bootID",
                "kernelVersion",
                "osImage",
                "containerRuntimeVersion",
                "kubeletVersion",
                "kubeProxyVersion",
                "operatingSystem",
                "architecture",
            )
        },
    )


def namespace(obj: Obj) -> None:
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"][
        "name"
    ]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _device_request(request: Obj) -> None:
    request.setdefault("allocationMode", "ExactCount")
    if request["allocationMode"] == "ExactCount":
        request.setdefault("count", 1)


def claim_spec(spec: Obj) -> None:
    for request in (spec.get("devices") or {}).get("requests") or []:
        if isinstance(request.get("exactly"), dict):
            _device_request(request["exactly"])
        for sub in request.get("firstAvailable") or []:
            if isinstance(sub, dict):
                _device_request(sub)


def resource_claim(obj: Obj, creating: bool) -> None:
    claim_spec(obj.setdefault("spec", {}))
    obj.setdefault("status", {})


def claim_template(obj: Obj, creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("metadata", {})
    claim_spec(spec.setdefault("spec", {}))


def pod_group(obj: Obj, creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    # schedulingConstraints and resourceClaims sit behind their own (disabled) gates
    spec.pop("schedulingConstraints", None)
    spec.pop("resourceClaims", None)
    spec.setdefault("podGroupTemplateRef", None)
    spec.setdefault("disruptionMode", "Pod")
    obj.setdefault("status", {})
    if creating:
        finalizers = obj["metadata"].setdefault("finalizers", [])
        if "scheduling.k8s.io/podgroup-protection" not in finalizers:
            finalizers.append("scheduling.k8s.io/podgroup-protection")


def workload(obj: Obj, creating: bool) -> None:
    for template in obj.setdefault("spec", {}).get("podGroupTemplates") or []:
        if isinstance(template, dict):
            template.setdefault("schedulingConstraints", None)


def crd(obj: Obj, creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("conversion", {"strategy": "None"})
    names = spec.setdefault("names", {})
    names.setdefault("singular", names.get("kind", "").lower())
    names.setdefault("listKind", names.get("kind", "") + "List")
    if creating:
        obj["status"] = {
            "conditions": None,
            "acceptedNames": {"plural": "", "kind": ""},
            "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")],
        }


def _node_adapter(obj: Obj, creating: bool) -> None:
    node(obj, creating)


def _namespace_adapter(obj: Obj, creating: bool) -> None:
    if creating:
        namespace(obj)


def _pod_adapter(obj: Obj, creating: bool) -> None:
    if creating:
        pod_create(obj)
    else:
        pod_spec(obj.setdefault("spec", {}))
    pod_status(obj.setdefault("status", {}))


BY_KIND: dict[tuple[str, str], Callable[[Obj, bool], None]] = {
    ("", "Pod"): _pod_adapter,
    ("", "Node"): _node_adapter,
    ("", "Namespace"): _namespace_adapter,
    ("resource.k8s.io", "ResourceClaim"): resource_claim,
    ("resource.k8s.io", "ResourceClaimTemplate"): claim_template,
    ("scheduling.k8s.io", "PodGroup"): pod_group,
    ("scheduling.k8s.io", "Workload"): workload,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): crd,
}


def apply_defaults(group: str, kind: str, obj: Obj, creating: bool) -> None:
    defaulter = BY_KIND.get((group, kind))
    if defaulter is not None:
        defaulter(obj, creating)
