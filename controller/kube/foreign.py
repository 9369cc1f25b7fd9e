"""Pods of other controllers as engine gangs, and their admission records (pure, no I/O).

A pod with `schedulerName: phalanx` that no GangJob controls joins a gang either by the
label `phalanx.dev/gang` (size from the annotation `phalanx.dev/gang-size`, queue from
the label `phalanx.dev/queue`) or by the upstream 1.36 API, `spec.schedulingGroup.
podGroupName` naming a scheduling.k8s.io/v1alpha2 PodGroup (size from
`spec.schedulingPolicy.gang.minCount`). Pods of one shape (requests, claims, node
selector, tolerations) form one pod set; a pod's claims are the ResourceClaims the
resourceclaim controller made from its templates (named in
`status.resourceClaimStatuses`) or the claims it names directly.

The commit point of such a gang is a ConfigMap, `phalanx-<gang|podgroup>-<name>` in the
gang's namespace, labelled `phalanx.dev/record=gang`, holding the admission record (the
GangJob record's shape plus each pod's name and uid) and owned by every pod of the gang
(or by the PodGroup), so the garbage collector removes it with them. Why a ConfigMap:
- creating an object under a deterministic name is atomic and refuses a second writer
  (409), which is the precondition a commit point needs, without touching the user's
  objects (a PodGroup's spec is immutable, pods belong to their controller);
- it is one write per gang for both kinds of gang (an annotation on every pod would be
  one write per pod, over the 0.2 writes per pod the bench allows the record);
- it is found again at start-up by one label-selected watch.
Releasing a finished gang writes nothing: a record whose pods are all finished or gone no
longer holds anything, and a new admission of the same gang replaces it (with its
resourceVersion). Evicting a gang (preemption) writes the record once more, marked
`released` with the reason (the release's commit point, with the record's
resourceVersion), after its pods got the DisruptionTarget condition; the record then
lists what is left to tear down: its pods are deleted, its claims deallocated (not
deleted: they are the pods' or the user's), and once all of that is done the record is
deleted. A released record holds nothing, and keeps the gang out of the queue until it is
gone. An admission that cannot be materialised (a claim's or binding's write refused, or
someone else's result where ours should be) is released the same way, as a GangJob's
broken admission is, with reason `BROKEN`: only its bound pods are taken down (a binding
cannot be undone), its claims are deallocated, and the record stays until `retryAt` (a
backoff growing with each broken admission), when the gang is tried again. Losing a
record is safe: bound pods and allocated claims it covered count as usage by others until
they finish.

The record of a gang grows with its pods (each with its name, uid, node and claims, and
each an owner of the record): a gang whose record would not fit a ConfigMap or etcd's
1.5 MiB (about 4,500 pods of eight GPUs with real name lengths) waits, saying so with the
numbers, before anything is reserved for it (record_size.py). It is refused rather than
recorded in several objects: the commit point must stay one atomic write, and a GangJob
that large is refused by the webhook for the same limit.

A ResourceClaim that pods name directly (`resourceClaimName`) may be named by pods of
several gangs. Its allocation is shared, as kube-scheduler shares it: the first of those
gangs to be pending allocates it (the others wait for that, so two gangs of one cycle
never allocate it twice); once it is allocated, the others' pods share it (`Part.shared`):
not the gang's to allocate (no devices, no quota), held to the claim's node, added to its
`reservedFor` (at most `RESERVED_FOR_MAX` consumers, counted for the whole gang and the
gangs queued before it: a gang that would overfill it waits whole) when bound. Only the gang that
allocated it lists it in its record, so only that gang's usage holds its devices; when
it is released the claim stays counted as others' usage while it is allocated, and an
evicted gang's tear-down takes only its own pods out of `reservedFor` while other gangs'
pods still use it.

A claim named directly by several pods of one gang (not allocated yet) is one reservation
too (`share_within`): the first of those pods in pod order takes it as its own claim (its
devices reserved once, quota charged once, the record listing it for that pod), the others
name it in `Part.within` and join its `reservedFor` with the same devices. They must be
where its devices are usable, and the engine places pods by pod set, not by pod: the gang
gets a required topology on `phalanx.dev/node-name`, so all of its pods land on one node
(more than needed when only some of its pods share the claim, or when the devices turn out
to be reachable from every node; never less).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from controller.engine.errors import InvalidInput
from controller.engine.model import Gang, PodClaim, PodSet, Toleration, Topology
from controller.engine.reservation import Reservation
from controller.kube.translate import (
    NODE_NAME_LABEL,
    Obj,
    admission_record,
    claim_spec,
    describe,
    owner_gang,
    pod_requests,
    reservation_from_record,
)

SCHEDULER_NAME = "phalanx"
GANG_LABEL = "phalanx.dev/gang"
SIZE_ANNOTATION = "phalanx.dev/gang-size"
QUEUE_LABEL = "phalanx.dev/queue"
RECORD_LABEL = "phalanx.dev/record"
RECORD_SELECTOR = f"{RECORD_LABEL}=gang"
RECORD_KEY = "admission"
RELEASED_KEY = "released"
BROKEN = "AdmissionBroken"
"""The reason of a record released because its admission could not be materialised (a
claim or binding refused, or someone else's result where ours should be): its bound pods
are taken down and its claims deallocated, its unbound pods left to be admitted again
once `retryAt` has passed."""
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
LABEL, POD_GROUP = "gang", "podgroup"


@dataclass(frozen=True, slots=True, order=True)
class Group:
    """Which foreign gang a pod joins: by label (`kind` gang) or by PodGroup."""

    namespace: str
    kind: str
    name: str

    @property
    def uid(self) -> str:
        """The engine's id of the gang (stable across restarts)."""
        return f"{self.kind}:{self.namespace}/{self.name}"

    @property
    def record_name(self) -> str:
        return f"phalanx-{self.kind}-{self.name}"


def _meta(obj: Obj) -> dict[str, Any]:
    return obj.get("metadata") or {}


def group_of(pod: Obj) -> Group | None:
    """The foreign gang a pod joins, if any (not for GangJob pods or other schedulers)."""
    spec, meta = pod.get("spec") or {}, _meta(pod)
    if spec.get("schedulerName") != SCHEDULER_NAME or owner_gang(pod) is not None:
        return None
    namespace = str(meta.get("namespace", ""))
    group = (spec.get("schedulingGroup") or {}).get("podGroupName")
    if group:
        return Group(namespace, POD_GROUP, str(group))
    label = (meta.get("labels") or {}).get(GANG_LABEL)
    return Group(namespace, LABEL, str(label)) if label else None


def group_of_record(config_map: Obj) -> Group | None:
    """The gang a record ConfigMap is for (from its name), if it is one."""
    meta = _meta(config_map)
    name = str(meta.get("name", ""))
    for kind in (POD_GROUP, LABEL):
        prefix = f"phalanx-{kind}-"
        if name.startswith(prefix):
            return Group(str(meta.get("namespace", "")), kind, name[len(prefix) :])
    return None


def finished(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") or bool(
        _meta(pod).get("deletionTimestamp")
    )


def pod_order(pod: Obj) -> tuple[int, str]:
    """Indexed Job pods by completion index, then by name."""
    index = (_meta(pod).get("labels") or {}).get(INDEX_LABEL)
    return (int(str(index)) if str(index).isdigit() else 2**31, str(_meta(pod).get("name")))


def gang_size(group: Group, pods: list[Obj], pod_group: Obj | None) -> int:
    """How many pods the gang needs before it may be admitted."""
    return size_of(group, {size_annotation(p) for p in pods}, pods[0] if pods else None, pod_group)


def size_annotation(pod: Obj) -> object:
    return (_meta(pod).get("annotations") or {}).get(SIZE_ANNOTATION)


def size_of(
    group: Group, sizes: Collection[object], first: Obj | None, pod_group: Obj | None
) -> int:
    """`gang_size` from what it reads of the pods: the distinct size annotations (label
    gangs) and the first pod by cache key (where a disagreement is reported)."""
    if group.kind == POD_GROUP:
        if pod_group is None:
            raise Waiting(f"waiting for PodGroup {group.namespace}/{group.name}")
        policy = (pod_group.get("spec") or {}).get("schedulingPolicy") or {}
        where = f"{describe('PodGroup', pod_group)}: spec.schedulingPolicy.gang.minCount"
        if "gang" not in policy:
            return 1
        value = (policy.get("gang") or {}).get("minCount")
    else:
        where = f"{describe('Pod', first or {})}: metadata.annotations[{SIZE_ANNOTATION}]"
        if len(sizes) != 1:
            raise InvalidInput(
                where, f"pods of gang {group.name} disagree: {sorted(map(str, sizes))}"
            )
        (value,) = sizes
    if not str(value).isdigit() or int(str(value)) < 1:
        raise InvalidInput(where, f"must be a positive integer, got {value!r}")
    return int(str(value))


class Waiting(Exception):
    """The gang cannot be judged yet (pods, claims or its PodGroup still to come)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One pod translated: its shape (the pods of one shape form one pod set) and what
    the pod set takes from it."""

    pod: Obj
    shape: str
    requests: dict[str, int]
    claims: tuple[PodClaim, ...]
    names: tuple[tuple[str, str], ...]
    """(pod claim name, ResourceClaim name) of each of its claims the gang allocates."""
    shared: tuple[tuple[str, str], ...] = ()
    """(pod claim name, ResourceClaim name) of each claim it shares, allocated already
    (`shared_claims`): the pod only joins its `reservedFor`, on the claim's node."""
    node_selector: Mapping[str, str] | None = None
    """Its node selector, with the node of the claims it shares (None: the pod's own)."""
    within: tuple[tuple[str, str], ...] = ()
    """(pod claim name, ResourceClaim name) of each claim another pod of its gang
    allocates (`share_within`): the pod joins its `reservedFor` with the same devices."""

    def sharing(self, within: tuple[tuple[str, str], ...]) -> Part:
        """This pod with claims of its own that another pod of its gang allocates."""
        names = {name for name, _ in within}
        return Part(
            self.pod,
            json.dumps([self.shape, sorted(within)]),
            self.requests,
            tuple(c for c in self.claims if c.name not in names),
            tuple((n, o) for n, o in self.names if n not in names),
            self.shared,
            self.node_selector,
            within,
        )


@dataclass(frozen=True)
class Members:
    """A foreign gang as the engine sees it, and which object is which of its parts."""

    group: Group
    gang: Gang
    sets: tuple[tuple[Part, ...], ...]
    """The pods of each pod set (`set<i>`), in pod order."""

    @cached_property
    def pods(self) -> Mapping[tuple[str, int], Obj]:
        """(pod set, index) -> pod."""
        return {
            (f"set{i}", index): part.pod
            for i, parts in enumerate(self.sets)
            for index, part in enumerate(parts)
        }

    @cached_property
    def shared(self) -> Mapping[tuple[str, str], str]:
        """(pod name, pod claim name) -> ResourceClaim name, of the claims it shares."""
        return self._by_pod(lambda part: part.shared)

    @cached_property
    def claims(self) -> Mapping[tuple[str, str], str]:
        """(pod name, pod claim name) -> ResourceClaim name, of the claims it allocates."""
        return self._by_pod(lambda part: part.names)

    @cached_property
    def within(self) -> Mapping[tuple[str, str], str]:
        """(pod name, pod claim name) -> ResourceClaim name, of the claims another pod of
        the gang allocates (`share_within`)."""
        return self._by_pod(lambda part: part.within)

    def _by_pod(
        self, which: Callable[[Part], tuple[tuple[str, str], ...]]
    ) -> dict[tuple[str, str], str]:
        return {
            (str(_meta(part.pod)["name"]), claim): name
            for parts in self.sets
            for part in parts
            for claim, name in which(part)
        }


def _made(pod: Obj) -> dict[object, object]:
    """Pod claim name -> the claim the resourceclaim controller made for it."""
    return {
        s.get("name"): s.get("resourceClaimName")
        for s in (pod.get("status") or {}).get("resourceClaimStatuses") or ()
    }


def claim_keys(pod: Obj) -> set[str]:
    """The cache keys of the claims a pod names, directly or in its status."""
    made, namespace = _made(pod), _meta(pod).get("namespace")
    names = (
        ref.get("resourceClaimName") or made.get(str(ref.get("name", "")))
        for ref in (pod.get("spec") or {}).get("resourceClaims") or ()
    )
    return {f"{namespace}/{name}" for name in names if name}


def named_claim_keys(pod: Obj) -> set[str]:
    """The cache keys of the claims a pod names directly (`resourceClaimName`)."""
    namespace = _meta(pod).get("namespace")
    return {
        f"{namespace}/{ref['resourceClaimName']}"
        for ref in (pod.get("spec") or {}).get("resourceClaims") or ()
        if ref.get("resourceClaimName")
    }


def is_gang_uid(key: str) -> bool:
    """Whether a work key is a foreign gang's uid (a GangJob's key is `namespace/name`,
    and a namespace has no colon)."""
    return key.startswith((f"{LABEL}:", f"{POD_GROUP}:"))


def claims_of(pod: Obj, claims: Mapping[str, Obj]) -> list[tuple[str, str, Obj]]:
    """(pod claim name, claim name, claim) for each of a pod's claims; raises Waiting
    while one is missing."""
    meta, spec = _meta(pod), pod.get("spec") or {}
    where = describe("Pod", pod)
    made = _made(pod)
    out = []
    for i, ref in enumerate(spec.get("resourceClaims") or ()):
        name = str(ref.get("name", ""))
        claim_name = ref.get("resourceClaimName") or made.get(name)
        if not claim_name:
            if not ref.get("resourceClaimTemplateName"):
                raise InvalidInput(
                    f"{where}: spec.resourceClaims[{i}]", "names no claim or template"
                )
            raise Waiting(f"waiting for claim {name} of pod {meta.get('name')}")
        claim = claims.get(f"{meta.get('namespace')}/{claim_name}")
        if claim is None:
            raise Waiting(f"waiting for ResourceClaim {claim_name}")
        out.append((name, str(claim_name), claim))
    return out


RESERVED_FOR_MAX = 256
"""How many consumers a claim's `status.reservedFor` may list (resource.k8s.io/v1
ResourceClaimReservedForMaxSize): a pod that would be one more cannot share it."""


def allocated(claim: Obj) -> bool:
    return bool((claim.get("status") or {}).get("allocation"))


def allocation_node(claim: Obj) -> str | None:
    """The node an allocated claim's devices are on (its allocation's node selector, as
    the scheduler writes it: `metadata.name In [node]`), None if they are reachable from
    every node."""
    selector = ((claim.get("status") or {}).get("allocation") or {}).get("nodeSelector") or {}
    for term in selector.get("nodeSelectorTerms") or ():
        for field in term.get("matchFields") or ():
            values = field.get("values") or ()
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and values:
                return str(values[0])
    return None


def shared_claims(
    pod: Obj, own: list[tuple[str, str, Obj]], recorded: Collection[str] | None
) -> set[str]:
    """The claims (by name) a pod shares rather than its gang allocating them: those it
    names directly that are allocated already (by another gang, or anyone), or, for a
    gang restored from its record, those it names directly that the record does not
    list (`recorded`): the record lists only what the gang allocated."""
    refs = (pod.get("spec") or {}).get("resourceClaims") or ()
    named = {str(r["resourceClaimName"]) for r in refs if r.get("resourceClaimName")}
    return {
        name
        for _, name, claim in own
        if name in named and (allocated(claim) if recorded is None else name not in recorded)
    }


def members(
    group: Group,
    pods: list[Obj],
    claims: Mapping[str, Obj],
    *,
    queue: str,
    priority: int,
    recorded: Collection[str] | None = None,
) -> Members:
    """The gang of `pods`: one pod set per distinct shape, in pod order. Every pod's
    claims are looked up before any is translated: a gang whose pods came before their
    claims is judged again at each claim's arrival, and waits at the cost of lookups.
    `recorded`: the claims the gang's record lists (restoring it; see `shared_claims`)."""
    ordered = [(pod, claims_of(pod, claims)) for pod in sorted(pods, key=pod_order)]
    shapes: dict[str, list[Part]] = {}
    for pod, own in ordered:
        translated = part(pod, own, shared_claims(pod, own, recorded))
        shapes.setdefault(translated.shape, []).append(translated)
    created = min(str(_meta(p).get("creationTimestamp") or "") for p in pods)
    return assemble(group, [tuple(s) for s in shapes.values()], created, queue, priority)


def part(pod: Obj, own: list[tuple[str, str, Obj]], shared: Collection[str] = ()) -> Part:
    """A pod translated, given its claims (`claims_of`) and which of them (by name) it
    shares: those are not the gang's to allocate, and put the pod on their node."""
    spec = pod.get("spec") or {}
    where = describe("Pod", pod)
    requests = pod_requests(spec, f"{where}: spec")
    mine = [(n, o, c) for n, o, c in own if o not in shared]
    theirs = [(n, o, c) for n, o, c in own if o in shared]
    pod_claims = tuple(
        PodClaim(
            name,
            claim_spec(
                ((claim.get("spec") or {}).get("devices")),
                f"{describe('ResourceClaim', claim)}: spec.devices",
            ),
        )
        for name, _, claim in mine
    )
    selector = dict(spec.get("nodeSelector") or {})
    nodes = {node for _, _, c in theirs if (node := allocation_node(c)) is not None}
    if len(nodes) > 1:
        raise InvalidInput(
            f"{where}: spec.resourceClaims",
            f"shares claims allocated on different nodes ({', '.join(sorted(nodes))})",
        )
    if nodes:
        selector[NODE_NAME_LABEL] = nodes.pop()
    shape = json.dumps(
        [
            requests,
            [(n, (c.get("spec") or {}).get("devices")) for n, _, c in mine],
            selector,
            spec.get("tolerations") or [],
            [(n, o) for n, o, _ in theirs],
        ],
        sort_keys=True,
    )
    return Part(
        pod,
        shape,
        requests,
        pod_claims,
        tuple((n, o) for n, o, _ in mine),
        tuple((n, o) for n, o, _ in theirs),
        selector,
    )


def share_within(sets: list[tuple[Part, ...]]) -> list[tuple[Part, ...]] | None:
    """The pod sets again if pods of the gang name one claim to allocate (None if none
    does): of the pods naming it, the first in pod order keeps it as its own, the others
    share it (`Part.within`) and so form pod sets of their own."""
    counts: dict[str, int] = {}
    for parts in sets:
        for part in parts:
            for _, name in part.names:
                counts[name] = counts.get(name, 0) + 1
    if all(n == 1 for n in counts.values()):
        return None
    taken: set[str] = set()
    shapes: dict[str, list[Part]] = {}
    for part in sorted((p for ps in sets for p in ps), key=lambda p: pod_order(p.pod)):
        within = tuple((n, o) for n, o in part.names if o in taken)
        taken.update(o for _, o in part.names if counts[o] > 1)
        shared = part.sharing(within) if within else part
        shapes.setdefault(shared.shape, []).append(shared)
    return [tuple(s) for s in shapes.values()]


def assemble(
    group: Group, sets: list[tuple[Part, ...]], created: str, queue: str, priority: int
) -> Members:
    """The gang of these pod sets (each its pods of one shape in pod order, the sets in
    the order of their first pods), the oldest pod created at `created`; claims that
    several of its pods name are one reservation, those pods on one node (`share_within`)."""
    within = share_within(sets)
    if within is not None:
        sets = within
    pod_sets = []
    for i, parts in enumerate(sets):
        first = parts[0]
        spec = first.pod.get("spec") or {}
        pod_sets.append(
            PodSet(
                f"set{i}",
                len(parts),
                first.requests,
                first.claims,
                dict(
                    first.node_selector
                    if first.node_selector is not None
                    else spec.get("nodeSelector") or {}
                ),
                tolerations_of(spec),
            )
        )
    gang = Gang(
        uid=group.uid,
        name=group.name,
        namespace=group.namespace,
        queue=queue,
        pod_sets=tuple(pod_sets),
        priority=priority,
        created=_seconds(created),
        topology=None if within is None else Topology(NODE_NAME_LABEL),
    )
    return Members(group, gang, tuple(sets))


def tolerations_of(spec: Obj) -> tuple[Toleration, ...]:
    return tuple(
        Toleration(
            str(t.get("key") or ""),
            str(t.get("operator") or "Equal"),
            str(t.get("value") or ""),
            str(t.get("effect") or ""),
        )
        for t in spec.get("tolerations") or ()
    )


def _seconds(text: str) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---- the record -------------------------------------------------------------------------
def record(found: Members, reservation: Reservation, admission_id: str) -> Obj:
    """The admission record: the GangJob record's shape, each pod with its name and uid."""
    written = admission_record(reservation, admission_id)
    for pod_set in written["podSets"]:
        for entry in pod_set["pods"]:
            pod = found.pods[(pod_set["name"], entry["index"])]
            entry["pod"] = str(_meta(pod)["name"])
            entry["uid"] = str(_meta(pod)["uid"])
            entry["claimObjects"] = {
                c["name"]: found.claims[(entry["pod"], c["name"])] for c in entry["claims"]
            }
    return written


def record_object(found: Members, written: Obj, current: Obj | None, pod_group: Obj | None) -> Obj:
    """The ConfigMap holding `written`, owned by the PodGroup or by every pod; replacing
    `current` (a stale record) if given."""
    group = found.group
    if pod_group is not None:
        owners = [
            {
                "apiVersion": "scheduling.k8s.io/v1alpha2",
                "kind": "PodGroup",
                "name": _meta(pod_group)["name"],
                "uid": _meta(pod_group)["uid"],
            }
        ]
    else:
        owners = [
            {"apiVersion": "v1", "kind": "Pod", "name": _meta(p)["name"], "uid": _meta(p)["uid"]}
            for p in found.pods.values()
        ]
    meta: dict[str, Any] = {
        "name": group.record_name,
        "namespace": group.namespace,
        "labels": {RECORD_LABEL: "gang"},
        "ownerReferences": owners,
    }
    if current is not None:
        meta["resourceVersion"] = _meta(current)["resourceVersion"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {RECORD_KEY: encode_record(written)},
    }


PACKED = 2
"""The `format` of a packed record (`encode_record`); a record without one is the plain
JSON of the written record, as the controller wrote it before (still read)."""


def encode_record(written: Obj) -> str:
    """The record as stored: compact JSON, each pod an array `[index, node, pod name, pod
    uid, claims]`, each claim `[name, ResourceClaim name, devices]`, each device
    `[request, driver, pool, device]`, or only `device` where the request, driver and
    pool are those of the claim's device before it; the names that repeat from pod to pod
    (nodes, pools, drivers, requests, devices, claim names) are given as indexes into
    `names`. A third of the plain JSON's size or less: a ConfigMap holds at most 1 MiB
    of data, which the plain record of a gang of 2,048 eight-device pods exceeds."""
    names: dict[str, int] = {}

    def ref(value: object) -> int:
        return names.setdefault(str(value), len(names))

    def packed_devices(devices: list[Obj]) -> list[object]:
        out: list[object] = []
        before: list[int] = []
        for d in devices:
            where = [ref(d["request"]), ref(d["driver"]), ref(d["pool"])]
            out.append(ref(d["device"]) if where == before else [*where, ref(d["device"])])
            before = where
        return out

    sets = []
    for pod_set in written.get("podSets") or ():
        pods = []
        for entry in pod_set.get("pods") or ():
            objects = entry.get("claimObjects") or {}
            claims = [
                [
                    ref(claim["name"]),
                    objects.get(claim["name"]),
                    packed_devices(claim.get("devices") or []),
                ]
                for claim in entry.get("claims") or ()
            ]
            pods.append([entry["index"], ref(entry["node"]), entry["pod"], entry["uid"], claims])
        sets.append({"name": pod_set["name"], "pods": pods})
    packed = {**written, "format": PACKED, "names": list(names), "podSets": sets}
    return json.dumps(packed, separators=(",", ":"), sort_keys=True)


def _unpack(packed: Obj) -> Obj:
    """The written record a packed one holds (`encode_record` read back)."""
    names = [str(n) for n in packed["names"]]
    sets = []
    for pod_set in packed["podSets"]:
        pods = []
        for index, node, pod, uid, claims in pod_set["pods"]:
            pods.append(
                {
                    "index": index,
                    "node": names[node],
                    "claims": [
                        {"name": names[name], "devices": _unpacked(devices, names)}
                        for name, _, devices in claims
                    ],
                    "pod": pod,
                    "uid": uid,
                    "claimObjects": {names[name]: obj for name, obj, _ in claims},
                }
            )
        sets.append({"name": pod_set["name"], "pods": pods})
    plain = {k: v for k, v in packed.items() if k not in ("format", "names")}
    plain["podSets"] = sets
    return plain


def _unpacked(devices: list[Any], names: list[str]) -> list[Obj]:
    out: list[Obj] = []
    where: list[int] = []
    for packed in devices:
        if isinstance(packed, list):
            *where, device = packed
        else:
            device = packed
        request, driver, pool = where
        out.append(
            {
                "request": names[request],
                "driver": names[driver],
                "pool": names[pool],
                "device": names[device],
            }
        )
    return out


def read_record(config_map: Obj) -> Obj:
    """The admission record a ConfigMap holds (packed, or plain JSON)."""
    where = f"{describe('ConfigMap', config_map)}: data.{RECORD_KEY}"
    text = (config_map.get("data") or {}).get(RECORD_KEY)
    try:
        value = json.loads(str(text))
    except ValueError as exc:
        raise InvalidInput(where, f"not JSON ({exc})") from None
    if not isinstance(value, dict) or not value.get("admissionId"):
        raise InvalidInput(where, "needs an object with admissionId")
    if value.get("format") == PACKED:
        try:
            return _unpack(value)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise InvalidInput(where, f"not a packed record ({exc!r})") from None
    return value


def released(written: Obj) -> Obj | None:
    """The eviction a record was released for (reason, message), if it was."""
    value = written.get(RELEASED_KEY)
    return value if isinstance(value, dict) else None


def released_record(
    config_map: Obj, written: Obj, reason: str, message: str, retry_at: float | None = None
) -> Obj:
    """The record ConfigMap marked released (to PUT with its resourceVersion); with
    `retry_at` (seconds since the epoch), kept until then (`retry_at`)."""
    released: Obj = {"reason": reason, "message": message}
    if retry_at is not None:
        released["retryAt"] = datetime.fromtimestamp(retry_at, UTC).isoformat()
    marked = {**written, RELEASED_KEY: released}
    return {**config_map, "data": {RECORD_KEY: encode_record(marked)}}


def retry_at(written: Obj) -> float | None:
    """When a released record may be deleted, so its gang be tried again (None: once its
    tear-down is done; an unreadable time counts as none)."""
    text = (released(written) or {}).get("retryAt")
    try:
        return None if text is None else datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def recorded_pods(written: Obj) -> list[tuple[str, str]]:
    """(name, uid) of every pod a record admitted."""
    return [
        (str(p.get("pod")), str(p.get("uid")))
        for ps in written.get("podSets") or ()
        for p in ps.get("pods") or ()
    ]


def recorded_uids(written: Obj) -> set[str]:
    return {str(p.get("uid")) for ps in written.get("podSets") or () for p in ps.get("pods") or ()}


def recorded_claims(written: Obj) -> set[str]:
    """The names of the ResourceClaims a record allocates."""
    return {
        str(name)
        for ps in written.get("podSets") or ()
        for p in ps.get("pods") or ()
        for name in (p.get("claimObjects") or {}).values()
    }


def restore(found: Members, written: Obj, admitted_at: float) -> Reservation:
    """The reservation a record holds, if its pods are still the ones recorded."""
    for pod_set in written.get("podSets") or ():
        for entry in pod_set.get("pods") or ():
            pod = found.pods.get((str(pod_set.get("name")), int(entry.get("index", -1))))
            if pod is None or _meta(pod).get("uid") != entry.get("uid"):
                raise InvalidInput(
                    f"gang {found.group.uid}: record",
                    f"pod {entry.get('pod')} is not where recorded",
                )
    return reservation_from_record(found.gang, written, admitted_at)
