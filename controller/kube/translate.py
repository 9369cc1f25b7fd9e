"""Pure functions between API objects (plain dicts, as the API server sends them) and
engine types, and back for the admission record. No I/O.

Every malformed object raises `InvalidInput` whose `where` names the object and the
field (`Node n1: status.allocatable[cpu]`), so the caller can log one line and skip it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from controller.api.common import API_VERSION
from controller.api.errors import format_validation_error
from controller.api.gangjob import SHARED_DEVICE_FIELDS
from controller.api.gangjob import GangJob as GangJobModel
from controller.api.queue import Queue as QueueModel
from controller.engine.errors import InvalidInput
from controller.engine.model import (
    AllocationMode,
    AttributeValue,
    ClaimSpec,
    Device,
    DeviceClass,
    DeviceKey,
    DeviceRequest,
    DeviceSubRequest,
    Gang,
    LabelRequirement,
    LabelSelector,
    MatchAttribute,
    Node,
    PodClaim,
    PodSet,
    Queue,
    QuotaLimit,
    ResourceSlice,
    Taint,
    Toleration,
    Topology,
    TopologyMode,
    Version,
    qualify,
)
from controller.engine.quantity import format_canonical, to_canonical
from controller.engine.reservation import (
    ClaimAllocation,
    DeviceAllocation,
    PodPlacement,
    Reservation,
)

Obj = dict[str, Any]
T = TypeVar("T")

NOT_READY_TAINT = Taint("node.kubernetes.io/not-ready", "", "NoSchedule")
"""What the node lifecycle controller puts on a NotReady node; we apply it ourselves so
a NotReady node takes no new pods even before that controller acts."""
GANG_JOB_KIND = "GangJob"
ADMISSION_ANNOTATION = "phalanx.dev/admission-id"
"""On the pods and claims the controller makes for an admission: which one they serve."""


# ---- helpers ---------------------------------------------------------------------------
def describe(kind: str, obj: Mapping[str, Any]) -> str:
    """`Kind namespace/name` (or `Kind name`), for error locations."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{kind} {ns}/{meta.get('name')}" if ns else f"{kind} {meta.get('name')}"


@contextmanager
def _field(where: str, field: str) -> Iterator[None]:
    """Re-label what goes wrong inside as InvalidInput at `where: field`."""
    try:
        yield
    except InvalidInput as exc:
        if exc.where.startswith(where):
            raise
        raise InvalidInput(f"{where}: {field}", str(exc)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidInput(
            f"{where}: {field}", f"malformed ({type(exc).__name__}: {exc})"
        ) from None


def _map(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(where, f"must be an object, got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput(where, f"must be a list, got {value!r}")
    return value


def _resources(values: Any, where: str) -> dict[str, int]:
    return {
        str(name): to_canonical(str(name), amount, where=f"{where}[{name}]")
        for name, amount in _map(values, where).items()
    }


def _timestamp(text: Any, where: str) -> float:
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidInput(where, f"not an RFC 3339 time: {text!r}") from None


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for r, v in more.items():
        total[r] = total.get(r, 0) + v


NODE_NAME_LABEL = "phalanx.dev/node-name"
"""A label every node has in the engine (not in the cluster): its name, so a pod set can
be held to one node by a node selector, as a claim's allocation holds the pods sharing
it (the allocation's `matchFields` on `metadata.name`)."""


# ---- cluster objects -------------------------------------------------------------------
def node(obj: Obj) -> Node:
    """A Node: allocatable in engine units, labels, taints, cordon; NotReady gets the
    not-ready taint."""
    where = describe("Node", obj)
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    allocatable = _resources(status.get("allocatable"), f"{where}: status.allocatable")
    taints = []
    for i, t in enumerate(_list(spec.get("taints"), f"{where}: spec.taints")):
        with _field(where, f"spec.taints[{i}]"):
            taints.append(Taint(str(t["key"]), str(t.get("value", "")), str(t["effect"])))
    conditions = _list(status.get("conditions"), f"{where}: status.conditions")
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready != "True" and NOT_READY_TAINT not in taints:
        taints.append(NOT_READY_TAINT)
    name = str(meta.get("name", ""))
    return Node(
        name,
        allocatable,
        labels={**_map(meta.get("labels"), f"{where}: metadata.labels"), NODE_NAME_LABEL: name},
        taints=tuple(taints),
        unschedulable=bool(spec.get("unschedulable", False)),
    )


def namespace_labels(obj: Obj) -> tuple[str, dict[str, str]]:
    meta = obj.get("metadata") or {}
    where = describe("Namespace", obj)
    return str(meta.get("name", "")), dict(_map(meta.get("labels"), f"{where}: metadata.labels"))


def _attribute(value: Any, where: str) -> AttributeValue | Version:
    typed = _map(value, where)
    if len(typed) != 1:
        raise InvalidInput(where, f"needs exactly one of bool, int, string, version; got {value}")
    kind, v = next(iter(typed.items()))
    if kind == "bool" and isinstance(v, bool):
        return v
    if kind == "int" and isinstance(v, int) and not isinstance(v, bool):
        return v
    if kind in ("string", "version") and isinstance(v, str):
        return Version(v) if kind == "version" else v
    if kind not in ("bool", "int", "string", "version"):
        raise InvalidInput(where, f"unknown attribute type {kind!r}")
    raise InvalidInput(f"{where}.{kind}", f"must be a {kind}, got {v!r}")


def resource_slice(obj: Obj) -> ResourceSlice:
    """A resource.k8s.io/v1 ResourceSlice of one node (`nodeName`) or of all (`allNodes`)."""
    where = describe("ResourceSlice", obj)
    spec = _map(obj.get("spec"), f"{where}: spec")
    driver = str(spec.get("driver", ""))
    pool = str(_map(spec.get("pool"), f"{where}: spec.pool").get("name", ""))
    if spec.get("nodeName"):
        node_name: str | None = str(spec["nodeName"])
    elif spec.get("allNodes"):
        node_name = None
    else:
        raise InvalidInput(
            f"{where}: spec", "only nodeName and allNodes slices are supported (not nodeSelector)"
        )
    devices = []
    for i, d in enumerate(_list(spec.get("devices"), f"{where}: spec.devices")):
        at = f"{where}: spec.devices[{i}]"
        d = _map(d, at)
        attributes = {
            qualify(str(k), driver): _attribute(v, f"{at}.attributes[{k}]")
            for k, v in _map(d.get("attributes"), f"{at}.attributes").items()
        }
        capacity = {
            qualify(str(k), driver): str(_map(v, f"{at}.capacity[{k}]").get("value", ""))
            for k, v in _map(d.get("capacity"), f"{at}.capacity").items()
        }
        with _field(where, f"spec.devices[{i}]"):
            devices.append(
                Device(
                    driver,
                    pool,
                    str(d.get("name", "")),
                    node_name,
                    attributes=attributes,
                    capacity=capacity,
                    shareable=bool(d.get("allowMultipleAllocations", False)),
                )
            )
    name = str((obj.get("metadata") or {}).get("name", ""))
    with _field(where, "spec"):
        return ResourceSlice(name, driver, pool, node_name, tuple(devices))


def _selectors(value: Any, where: str) -> tuple[str, ...]:
    out = []
    for i, s in enumerate(_list(value, where)):
        expression = _map(_map(s, f"{where}[{i}]").get("cel"), f"{where}[{i}].cel").get(
            "expression"
        )
        if not isinstance(expression, str) or not expression:
            raise InvalidInput(f"{where}[{i}].cel.expression", "must be a non-empty string")
        out.append(expression)
    return tuple(out)


def device_class(obj: Obj) -> DeviceClass:
    where = describe("DeviceClass", obj)
    spec = _map(obj.get("spec"), f"{where}: spec")
    name = str((obj.get("metadata") or {}).get("name", ""))
    return DeviceClass(name, _selectors(spec.get("selectors"), f"{where}: spec.selectors"))


def claim_devices(obj: Obj) -> tuple[DeviceKey, ...]:
    """The devices a ResourceClaim's status.allocation holds (none if unallocated)."""
    where = describe("ResourceClaim", obj)
    allocation = _map((obj.get("status") or {}).get("allocation"), f"{where}: status.allocation")
    results = _list(
        _map(allocation.get("devices"), f"{where}: status.allocation.devices").get("results"),
        f"{where}: status.allocation.devices.results",
    )
    out = []
    for i, r in enumerate(results):
        at = f"{where}: status.allocation.devices.results[{i}]"
        r = _map(r, at)
        key = (str(r.get("driver", "")), str(r.get("pool", "")), str(r.get("device", "")))
        if not all(key):
            raise InvalidInput(at, "needs driver, pool and device")
        out.append(key)
    return tuple(out)


def _sub_request(value: Mapping[str, Any], name: str, where: str) -> DeviceSubRequest:
    mode = value.get("allocationMode", "ExactCount")
    if mode not in ("ExactCount", "All"):
        raise InvalidInput(f"{where}.allocationMode", f"must be ExactCount or All, got {mode!r}")
    count = value.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool):
        raise InvalidInput(f"{where}.count", f"must be an integer, got {count!r}")
    selectors = _selectors(value.get("selectors"), f"{where}.selectors")
    with _field(where, "deviceClassName"):
        return DeviceSubRequest(
            name, str(value.get("deviceClassName", "")), selectors, AllocationMode(mode), count
        )


def claim_spec(devices: Any, where: str) -> ClaimSpec:
    """A ResourceClaim(Template)'s `spec.devices`: requests and constraints."""
    devices = _map(devices, where)
    requests = []
    for i, r in enumerate(_list(devices.get("requests"), f"{where}.requests")):
        at = f"{where}.requests[{i}]"
        r = _map(r, at)
        name = str(r.get("name", ""))
        if r.get("exactly") is not None:
            sub = _sub_request(_map(r["exactly"], f"{at}.exactly"), name, f"{at}.exactly")
            requests.append(DeviceRequest(name, (sub,)))
        elif r.get("firstAvailable") is not None:
            alternatives = tuple(
                _sub_request(
                    _map(s, f"{at}.firstAvailable[{j}]"),
                    str(_map(s, f"{at}.firstAvailable[{j}]").get("name", "")),
                    f"{at}.firstAvailable[{j}]",
                )
                for j, s in enumerate(_list(r["firstAvailable"], f"{at}.firstAvailable"))
            )
            with _field(at, "firstAvailable"):
                requests.append(DeviceRequest(name, alternatives, True))
        else:
            raise InvalidInput(at, "needs exactly or firstAvailable")
    constraints = []
    for i, c in enumerate(_list(devices.get("constraints"), f"{where}.constraints")):
        at = f"{where}.constraints[{i}]"
        c = _map(c, at)
        if not c.get("matchAttribute"):
            raise InvalidInput(at, "only matchAttribute constraints are supported")
        names = tuple(str(n) for n in _list(c.get("requests"), f"{at}.requests"))
        constraints.append(MatchAttribute(str(c["matchAttribute"]), names))
    with _field(where, "requests"):
        return ClaimSpec(tuple(requests), tuple(constraints))


# ---- pods --------------------------------------------------------------------------------
def _container_requests(container: Mapping[str, Any], where: str) -> dict[str, int]:
    """Requests, defaulting to limits where only a limit is given (as the API server does)."""
    resources = _map(container.get("resources"), f"{where}.resources")
    limits = _map(resources.get("limits"), f"{where}.resources.limits")
    requests = _map(resources.get("requests"), f"{where}.resources.requests")
    return _resources({**limits, **requests}, f"{where}.resources.requests")


def pod_requests(spec: Mapping[str, Any], where: str) -> dict[str, int]:
    """What one pod takes from a node, as kube-scheduler counts it: the containers' sum
    (plus sidecars, init containers with restartPolicy Always), or the largest init
    container step if bigger, then pod-level requests where given, plus overhead.
    Without the `pods` slot (the engine adds it)."""
    total: dict[str, int] = {}
    for i, c in enumerate(_list(spec.get("containers"), f"{where}.containers")):
        _add(
            total,
            _container_requests(_map(c, f"{where}.containers[{i}]"), f"{where}.containers[{i}]"),
        )
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for i, c in enumerate(_list(spec.get("initContainers"), f"{where}.initContainers")):
        at = f"{where}.initContainers[{i}]"
        c = _map(c, at)
        own = _container_requests(c, at)
        if c.get("restartPolicy") == "Always":
            _add(total, own)
            _add(sidecars, own)
            step = dict(sidecars)
        else:
            step = dict(own)
            _add(step, sidecars)
        for r, v in step.items():
            init_peak[r] = max(init_peak.get(r, 0), v)
    for r, v in init_peak.items():
        total[r] = max(total.get(r, 0), v)
    pod_level = _map(spec.get("resources"), f"{where}.resources").get("requests")
    total.update(_resources(pod_level, f"{where}.resources.requests"))
    _add(total, _resources(spec.get("overhead"), f"{where}.overhead"))
    return {r: v for r, v in total.items() if v}


def pod_usage(obj: Obj) -> tuple[str, dict[str, int]] | None:
    """(node, requests with the pod slot) of a pod holding node resources; None for an
    unbound or finished pod."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    node_name = spec.get("nodeName")
    if not node_name or status.get("phase") in ("Succeeded", "Failed"):
        return None
    requests = pod_requests(spec, f"{describe('Pod', obj)}: spec")
    requests["pods"] = requests.get("pods", 0) + 1
    return str(node_name), requests


def owner_gang(obj: Obj) -> str | None:
    """The uid of the GangJob controlling this object (pod, claim, service), if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if (
            ref.get("kind") == GANG_JOB_KIND
            and str(ref.get("apiVersion", "")).split("/")[0] == API_VERSION.split("/")[0]
            and ref.get("controller")
        ):
            return str(ref.get("uid"))
    return None


def admission_of(obj: Obj) -> str | None:
    """The admission a pod or claim was made for (its ADMISSION_ANNOTATION), if any."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(ADMISSION_ANNOTATION)
    return None if value is None else str(value)


# ---- priorities, queues, gangs -----------------------------------------------------------
def priority_class(obj: Obj) -> tuple[str, int, bool]:
    """(name, value, globalDefault) of a scheduling.k8s.io/v1 PriorityClass."""
    where = describe("PriorityClass", obj)
    value = obj.get("value")
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{where}: value", f"must be an integer, got {value!r}")
    name = str((obj.get("metadata") or {}).get("name", ""))
    return name, value, bool(obj.get("globalDefault", False))


def _validated(model: type[T], kind: str, obj: Obj) -> T:
    full = {"apiVersion": API_VERSION, "kind": kind, **obj}
    source = describe(kind, obj)
    try:
        return model.from_manifest(full)  # type: ignore[attr-defined, no-any-return]
    except ValidationError as err:
        first = format_validation_error(err, source).splitlines()[0][len(source) + 2 :]
        path, _, what = first.partition(": ")
        raise InvalidInput(f"{source}: {path}" if what else source, what or path) from None


def queue(obj: Obj) -> Queue:
    """A Queue custom resource as an engine queue (quota in engine units)."""
    model = _validated(QueueModel, "Queue", obj)
    where = describe("Queue", obj)
    quota = {}
    for i, item in enumerate(model.spec.quota):
        at = f"{where}: spec.quota[{i}]"
        r = item.resource

        def amount(v: int | str | None, field: str, r: str = r, at: str = at) -> int | None:
            return None if v is None else to_canonical(r, v, where=f"{at}.{field}")

        quota[r] = QuotaLimit(
            amount(item.nominal, "nominal") or 0,
            amount(item.borrowing_limit, "borrowingLimit"),
            amount(item.lending_limit, "lendingLimit"),
        )
    selector = model.spec.namespace_selector
    engine_selector = (
        None
        if selector is None
        else LabelSelector(
            dict(selector.match_labels),
            tuple(
                LabelRequirement(e.key, e.operator, tuple(e.values or ()))
                for e in selector.match_expressions
            ),
        )
    )
    with _field(where, "spec"):
        return Queue(
            model.metadata.name, model.spec.parent, quota, model.spec.weight, engine_selector
        )


def _toleration(t: Any) -> Toleration:
    return Toleration(t.key or "", t.operator or "Equal", t.value or "", t.effect or "")


def gang(
    obj: Obj,
    templates: Mapping[str, Obj],
    priorities: Mapping[str, int],
    default_priority: int = 0,
) -> Gang:
    """A GangJob as an engine gang. `templates` are ResourceClaimTemplates by
    `namespace/name`, `priorities` PriorityClass values by name."""
    model = _validated(GangJobModel, "GangJob", obj)
    meta = obj.get("metadata") or {}
    where = describe("GangJob", obj)
    namespace = str(meta.get("namespace", ""))
    spec = model.spec
    if spec.priority is not None:
        priority = spec.priority
    elif spec.priority_class_name is not None:
        if spec.priority_class_name not in priorities:
            raise InvalidInput(
                f"{where}: spec.priorityClassName",
                f"PriorityClass {spec.priority_class_name!r} does not exist",
            )
        priority = priorities[spec.priority_class_name]
    else:
        priority = default_priority
    raw_sets = (obj.get("spec") or {}).get("podSets") or []
    pod_sets = []
    for i, ps in enumerate(spec.pod_sets):
        at = f"{where}: spec.podSets[{i}].template.spec"
        claims = []
        for j, rc in enumerate(ps.template.spec.resource_claims):
            if rc.resource_claim_template_name is None:
                raise InvalidInput(
                    f"{at}.resourceClaims[{j}].resourceClaimName",
                    "a claim shared by name is not supported in a pod set; use a template",
                )
            key = f"{namespace}/{rc.resource_claim_template_name}"
            template = templates.get(key)
            if template is None:
                raise InvalidInput(
                    f"{at}.resourceClaims[{j}].resourceClaimTemplateName",
                    f"ResourceClaimTemplate {key} does not exist",
                )
            devices = ((template.get("spec") or {}).get("spec") or {}).get("devices")
            spec_where = f"{describe('ResourceClaimTemplate', template)}: spec.spec.devices"
            claims.append(PodClaim(rc.name, claim_spec(devices, spec_where)))
        pod_spec = raw_sets[i]["template"]["spec"]
        requests = pod_requests(pod_spec, at)
        with _field(where, f"spec.podSets[{i}]"):
            pod_sets.append(
                PodSet(
                    ps.name,
                    ps.replicas,
                    requests,
                    tuple(claims),
                    dict(ps.template.spec.node_selector),
                    tuple(_toleration(t) for t in ps.template.spec.tolerations),
                )
            )
    topology = None
    if spec.topology is not None:
        with _field(where, "spec.topology"):
            topology = Topology(
                spec.topology.key,
                TopologyMode(spec.topology.mode),
                spec.topology.source == "deviceAttribute",
            )
    created = _timestamp(meta.get("creationTimestamp"), f"{where}: metadata.creationTimestamp")
    with _field(where, "spec"):
        return Gang(
            uid=str(meta.get("uid", "")),
            name=str(meta.get("name", "")),
            namespace=namespace,
            queue=spec.queue_name,
            pod_sets=tuple(pod_sets),
            priority=priority,
            created=created,
            topology=topology,
            runtime_estimate=spec.runtime_estimate_seconds,
            min_runtime=spec.min_runtime_seconds or 0.0,
            checkpoint_interval=spec.checkpoint_interval_seconds,
        )


# ---- the admission record ----------------------------------------------------------------
def _quantities(resources: Mapping[str, int]) -> dict[str, str]:
    return {r: format_canonical(r, v) for r, v in sorted(resources.items())}


def admission_record(reservation: Reservation, admission_id: str) -> Obj:
    """The GangJob `status.admission` for a reservation (camelCase, as written)."""
    by_set: dict[str, list[Obj]] = {}
    for pod in reservation.pods:
        by_set.setdefault(pod.pod_set, []).append(
            {
                "index": pod.index,
                "node": pod.node,
                "claims": [
                    {
                        "name": claim.claim,
                        "devices": [
                            {
                                "request": da.request,
                                "driver": da.device[0],
                                "pool": da.device[1],
                                "device": da.device[2],
                            }
                            for da in claim.devices
                        ],
                    }
                    for claim in pod.claims
                ],
            }
        )
    return {
        "admissionId": admission_id,
        "queue": reservation.queue,
        "podSets": [{"name": name, "pods": pods} for name, pods in by_set.items()],
        "quotaCharged": _quantities(reservation.charge),
        "borrowed": _quantities(reservation.borrowed),
    }


def with_shared_device_fields(record: Obj) -> Obj:
    """`record` (an `admission_record`) with the request, driver and pool that all
    devices of a claim share given once on the claim: the GangJob's `status.admission`
    as written. A gang of 2,048 pods of eight devices each records 2 MB in full, over
    the 1.5 MiB etcd stores in one object; this way about a third of it."""
    for pod_set in record["podSets"]:
        for pod in pod_set["pods"]:
            pod["claims"] = [_shared(claim) for claim in pod["claims"]]
    return record


def recorded_devices(claim: Obj) -> list[Any]:
    """A recorded claim's devices, each with its request, driver and pool (the claim's,
    where a device does not give its own)."""
    devices = list(claim.get("devices") or ())
    shared = {k: claim[k] for k in SHARED_DEVICE_FIELDS if k in claim}
    if not shared:
        return devices
    return [{**shared, **d} if isinstance(d, dict) else d for d in devices]


def _shared(claim: Obj) -> Obj:
    devices = claim["devices"]
    if not devices:
        return claim
    shared = {
        field: devices[0][field]
        for field in SHARED_DEVICE_FIELDS
        if all(d[field] == devices[0][field] for d in devices)
    }
    return {
        "name": claim["name"],
        **shared,
        "devices": [{k: v for k, v in d.items() if k not in shared} for d in devices],
    }


def _request_class(claim: PodClaim, request: str, where: str) -> str:
    head, _, sub = request.partition("/")
    for r in claim.spec.requests:
        if r.name != head:
            continue
        for alt in r.alternatives:
            if (alt.name == sub) if r.first_available else not sub:
                return alt.device_class
    raise InvalidInput(where, f"claim {claim.name} has no request {request!r}")


def reservation_from_record(gang: Gang, record: Obj, admitted_at: float = 0.0) -> Reservation:
    """Rebuild the reservation a GangJob's `status.admission` records (restart)."""
    where = f"GangJob {gang.namespace}/{gang.name}: status.admission"
    sets = {ps.name: ps for ps in gang.pod_sets}
    pods: list[PodPlacement] = []
    seen: set[tuple[str, int]] = set()
    for i, rs in enumerate(_list(record.get("podSets"), f"{where}.podSets")):
        at = f"{where}.podSets[{i}]"
        ps = sets.get(str(rs.get("name")))
        if ps is None:
            raise InvalidInput(f"{at}.name", f"no pod set named {rs.get('name')!r}")
        requests = dict(ps.requests)
        requests["pods"] = requests.get("pods", 0) + 1
        claims_by_name = {c.name: c for c in ps.claims}
        for j, rp in enumerate(_list(rs.get("pods"), f"{at}.pods")):
            pat = f"{at}.pods[{j}]"
            index = rp.get("index")
            if not isinstance(index, int) or not 0 <= index < ps.count:
                raise InvalidInput(f"{pat}.index", f"must be in [0, {ps.count}), got {index!r}")
            if (ps.name, index) in seen:
                raise InvalidInput(f"{pat}.index", f"pod {ps.name}-{index} is recorded twice")
            seen.add((ps.name, index))
            claims = []
            for k, rc in enumerate(_list(rp.get("claims"), f"{pat}.claims")):
                cat = f"{pat}.claims[{k}]"
                claim = claims_by_name.get(str(rc.get("name")))
                if claim is None:
                    raise InvalidInput(f"{cat}.name", f"pod set has no claim {rc.get('name')!r}")
                devices = []
                listed = _list(rc.get("devices"), f"{cat}.devices")
                for m, d in enumerate(recorded_devices({**rc, "devices": listed})):
                    with _field(cat, f"devices[{m}]"):
                        devices.append(
                            DeviceAllocation(
                                str(d["request"]),
                                (str(d["driver"]), str(d["pool"]), str(d["device"])),
                                _request_class(claim, str(d["request"]), f"{cat}.devices[{m}]"),
                            )
                        )
                claims.append(ClaimAllocation(claim.name, tuple(devices)))
            if sorted(c.claim for c in claims) != sorted(claims_by_name):
                raise InvalidInput(
                    f"{pat}.claims", f"must record the claims {sorted(claims_by_name)}"
                )
            pods.append(
                PodPlacement(ps.name, index, str(rp.get("node", "")), requests, tuple(claims))
            )
    if len(pods) != gang.pod_count:
        raise InvalidInput(
            f"{where}.podSets", f"records {len(pods)} pods, the gang has {gang.pod_count}"
        )

    def amounts(field: str) -> dict[str, int]:
        return _resources(record.get(field), f"{where}.{field}")

    return Reservation(
        gang.uid,
        str(record.get("queue", gang.queue)),
        tuple(pods),
        amounts("quotaCharged"),
        amounts("borrowed"),
        admitted_at,
    )
