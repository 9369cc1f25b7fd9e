"""A foreign gang is judged incrementally: an event costs the same whatever the gang's
size, and the judgement equals judging every gang from scratch after any sequence of
events. The caches get their events as their informers hand them over (`Informer._apply`,
one watch event each), without an API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from controller.engine.errors import InvalidInput
from controller.engine.model import Gang
from controller.engine.state import ClusterState
from controller.kube import foreign as f
from controller.kube import resources as r
from controller.kube.caches import ClusterCaches
from controller.kube.foreign_gangs import ForeignGangs
from controller.kube.informer import DELETED
from controller.kube.resources import Resource
from controller.kube.rest import Obj, Rest
from tests.property.harness import property_settings

NS = "ns"
ONE_GPU = {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu"}}]}}


class Reads(dict[str, Obj]):
    """A cache that counts the objects read from it."""

    reads = 0

    def __getitem__(self, key: str) -> Obj:
        Reads.reads += 1
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        Reads.reads += 1
        return super().get(key, default)

    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            Reads.reads += 1
            yield key

    def values(self) -> Any:
        return [self[k] for k in self]

    def items(self) -> Any:
        return [(k, self[k]) for k in self]


class Cluster:
    """ClusterCaches fed watch events, as after their first sync."""

    def __init__(self, counted: bool = False) -> None:
        self.state = ClusterState()
        # no informer runs: nothing is read from the API
        self.caches = ClusterCaches(cast(Rest, None), self.state, optional=(r.POD_GROUPS,))
        if counted:
            for plural in ("pods", "resourceclaims"):
                self.caches.informers[plural].cache = Reads()
        self.caches.ready.set()
        self.version = 0

    def put(self, resource: Resource, obj: Obj) -> None:
        self.version += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self.version)
        old = self.caches.informers[resource.plural].cache.get(resource.key(obj))
        self._apply(resource, "ADDED" if old is None else "MODIFIED", obj)

    def delete(self, resource: Resource, name: str) -> None:
        old = self.caches.informers[resource.plural].cache.get(f"{NS}/{name}")
        if old is not None:
            self._apply(resource, DELETED, old)

    def _apply(self, resource: Resource, kind: str, obj: Obj) -> None:
        informer = self.caches.informers[resource.plural]
        informer._apply({"type": kind, "object": obj}, None)


def pod(
    name: str,
    *,
    gang: str | None = "g",
    pod_group: str | None = None,
    size: str | None = "2",
    claim: str | None = None,
    template: bool = False,
    made: str | None = None,
    bound: bool = False,
    finished: bool = False,
    priority_class: str | None = None,
) -> Obj:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {f.GANG_LABEL: gang} if gang else {},
        "annotations": {f.SIZE_ANNOTATION: size} if size else {},
    }
    spec: dict[str, Any] = {
        "schedulerName": "phalanx",
        "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}],
    }
    if pod_group:
        spec["schedulingGroup"] = {"podGroupName": pod_group}
    if claim and template:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "gpu"}]
    elif claim:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimName": claim}]
    if bound:
        spec["nodeName"] = "n1"
    if priority_class:
        spec["priorityClassName"] = priority_class
    status: dict[str, Any] = {"phase": "Succeeded" if finished else "Pending"}
    if made:
        status["resourceClaimStatuses"] = [{"name": "gpu", "resourceClaimName": made}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def gpu_claim(name: str, owner: str | None = None) -> Obj:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": owner, "uid": f"uid-{owner}"}
            | {"controller": True}
        ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": meta,
        "spec": ONE_GPU,
    }


def pod_group(name: str, min_count: int | None) -> Obj:
    policy = {} if min_count is None else {"gang": {"minCount": min_count}}
    return {
        "apiVersion": "scheduling.k8s.io/v1alpha2",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {"schedulingPolicy": policy},
    }


def record(group: f.Group, uids: list[str], released: bool) -> Obj:
    written: dict[str, Any] = {
        "admissionId": "a1",
        "podSets": [{"name": "set0", "pods": [{"index": i, "uid": u} for i, u in enumerate(uids)]}],
    }
    if released:
        written[f.RELEASED_KEY] = {"reason": "Preempted", "message": "m"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": group.record_name,
            "namespace": NS,
            "labels": {f.RECORD_LABEL: "gang"},
        },
        "data": {f.RECORD_KEY: json.dumps(written)},
    }


# ---- the cost of an event -----------------------------------------------------------------
def reads_per_event(size: int, pods_first: bool) -> list[int]:
    """Pods and claims read from the caches at each event of forming a `size`-pod gang."""
    cluster = Cluster(counted=True)
    events: list[tuple[Resource, Obj]] = []
    for i in range(size):
        name = f"p{i}"
        if pods_first:
            events.append((r.PODS, pod(name, size=str(size), claim=f"{name}-gpu", template=True)))
        else:
            events.append((r.RESOURCE_CLAIMS, gpu_claim(f"{name}-gpu")))
            events.append((r.PODS, pod(name, size=str(size), claim=f"{name}-gpu")))
    if pods_first:
        for i in range(size):
            name = f"p{i}"
            events.append((r.RESOURCE_CLAIMS, gpu_claim(f"{name}-gpu", owner=name)))
            made = pod(name, size=str(size), claim=f"{name}-gpu", template=True, made=f"{name}-gpu")
            events.append((r.PODS, made))
    reads = []
    for resource, obj in events:
        Reads.reads = 0
        cluster.put(resource, obj)
        reads.append(Reads.reads)
    assert cluster.caches.foreign.reasons == {}
    assert sum(s.count for s in cluster.state.pending[f"gang:{NS}/g"].pod_sets) == size
    return reads


def test_an_event_of_a_forming_gang_reads_as_many_objects_whatever_its_size() -> None:
    small, large = reads_per_event(40, False), reads_per_event(320, False)
    # the last event completes the gang, which is translated then, once
    assert max(large[:-1]) == max(small[:-1])


def test_an_event_of_a_gang_whose_pods_come_before_their_claims_costs_the_same_at_any_size() -> (
    None
):
    small, large = reads_per_event(40, True), reads_per_event(320, True)
    assert max(large[:-1]) == max(small[:-1])


# ---- the incremental judgement equals the judgement from scratch ------------------------
def test_a_pod_relabelled_into_another_gang_leaves_the_first() -> None:
    cluster = Cluster()
    cluster.put(r.PODS, pod("p0", gang="a"))
    cluster.put(r.PODS, pod("p1", gang="a"))
    assert f"gang:{NS}/a" in cluster.state.pending
    cluster.put(r.PODS, pod("p1", gang="b"))
    reasons = cluster.caches.foreign.reasons
    assert f"gang:{NS}/a" not in cluster.state.pending
    assert reasons[f"gang:{NS}/a"] == "waiting for pods: 1 of 2 exist"
    assert reasons[f"gang:{NS}/b"] == "waiting for pods: 1 of 2 exist"


PODS = [f"p{i}" for i in range(5)]
SELDOM = st.sampled_from([False, False, False, True])
GROUPS = [f.Group(NS, f.LABEL, "a"), f.Group(NS, f.LABEL, "b"), f.Group(NS, f.POD_GROUP, "pg")]


@st.composite
def pod_events(draw: st.DrawFn) -> tuple[str, Any]:
    name = draw(st.sampled_from(PODS))
    joins = draw(st.sampled_from(["a", "b", "pg", None]))
    how = draw(st.sampled_from(["named", "template", "made", "none"]))
    return "pod", pod(
        name,
        gang=joins if joins in ("a", "b") else None,
        pod_group="pg" if joins == "pg" else None,
        size=draw(st.sampled_from(["1", "2", "3", "x", None])),
        claim=None if how == "none" else f"{name}-gpu",
        template=how in ("template", "made"),
        made=f"{name}-gpu" if how == "made" else None,
        bound=draw(SELDOM),
        finished=draw(SELDOM),
        priority_class=draw(st.sampled_from([None, None, None, "missing"])),
    )


EVENTS = st.one_of(
    pod_events(),
    st.tuples(st.just("delete pod"), st.sampled_from(PODS)),
    st.tuples(
        st.just("claim"),
        st.builds(
            lambda name, owned: gpu_claim(f"{name}-gpu", owner=name if owned else None),
            st.sampled_from(PODS),
            st.booleans(),
        ),
    ),
    st.tuples(st.just("delete claim"), st.sampled_from([f"{p}-gpu" for p in PODS])),
    st.tuples(st.just("pod group"), st.sampled_from([1, 2, 3, 4, None])),
    st.just(("delete pod group", None)),
    st.tuples(
        st.just("record"),
        st.builds(
            record,
            st.sampled_from(GROUPS),
            st.lists(st.sampled_from([f"uid-{p}" for p in PODS]), max_size=3),
            SELDOM,
        ),
    ),
    st.tuples(st.just("delete record"), st.sampled_from(GROUPS)),
)


def apply(cluster: Cluster, event: tuple[str, Any]) -> None:
    what, value = event
    if what == "pod":
        cluster.put(r.PODS, value)
    elif what == "delete pod":
        cluster.delete(r.PODS, value)
    elif what == "claim":
        cluster.put(r.RESOURCE_CLAIMS, value)
    elif what == "delete claim":
        cluster.delete(r.RESOURCE_CLAIMS, value)
    elif what == "pod group":
        cluster.put(r.POD_GROUPS, pod_group("pg", value))
    elif what == "delete pod group":
        cluster.delete(r.POD_GROUPS, "pg")
    elif what == "record":
        cluster.put(r.CONFIG_MAPS, value)
    else:
        cluster.delete(r.CONFIG_MAPS, value.record_name)


def from_scratch(cluster: Cluster) -> tuple[ForeignGangs, ClusterState]:
    """Every gang judged once over the caches as they are, by a fresh ForeignGangs."""
    state = ClusterState()
    caches = cluster.caches
    gangs = ForeignGangs(state, caches.cache, caches.foreign.priority, "default")
    for obj in caches.cache("pods").values():
        gangs.index(obj)
    for group in gangs.all_groups():
        gangs.sync(group)
    return gangs, state


def waiting_pods(cluster: Cluster, group: f.Group) -> list[Obj]:
    """A group's pods neither finished nor bound, by cache key."""
    pods = cluster.caches.cache("pods")
    return [
        pods[k]
        for k in sorted(pods)
        if f.group_of(pods[k]) == group
        and not f.finished(pods[k])
        and not pods[k]["spec"].get("nodeName")
    ]


def translated(cluster: Cluster, group: f.Group) -> Gang:
    """The gang of a group's waiting pods, translated all at once."""
    claims = cluster.caches.cache("resourceclaims")
    return f.members(group, waiting_pods(cluster, group), claims, queue="q", priority=0).gang


def reason_from_scratch(cluster: Cluster, group: f.Group) -> str | None:
    """Why a gang without a record waits (None if it is pending or has no waiting pods):
    too few pods, its first pod's PriorityClass, its claims, its pods' translation."""
    waiting = waiting_pods(cluster, group)
    if not waiting:
        return None
    pod_group = cluster.caches.cache("podgroups").get(f"{NS}/{group.name}")
    try:
        size = f.gang_size(group, waiting, pod_group)
        if len(waiting) < size:
            return f"waiting for pods: {len(waiting)} of {size} exist"
        first = min(waiting, key=f.pod_order)
        where = f"Pod {NS}/{first['metadata']['name']}: spec.priorityClassName"
        cluster.caches.foreign.priority(first["spec"].get("priorityClassName"), where)
        translated(cluster, group)
    except (InvalidInput, f.Waiting) as exc:
        return str(exc)
    return None


def judgement(gangs: ForeignGangs, state: ClusterState, uid: str) -> object:
    return (
        gangs.reasons.get(uid),
        state.pending.get(uid),
        uid in state.admitted,
        gangs.admission_ids.get(uid),
    )


@property_settings(300)
@given(st.lists(EVENTS, max_size=40))
def test_judging_gangs_event_by_event_equals_judging_them_from_scratch(
    events: list[tuple[str, Any]],
) -> None:
    cluster = Cluster()
    for event in events:
        apply(cluster, event)
        scratch, state = from_scratch(cluster)
        for group in GROUPS:
            assert judgement(cluster.caches.foreign, cluster.state, group.uid) == judgement(
                scratch, state, group.uid
            ), (event, group.uid)
        for group in GROUPS:
            pending = cluster.state.pending.get(group.uid)
            if pending is not None:
                assert pending.pod_sets == translated(cluster, group).pod_sets
            if f"{NS}/{group.record_name}" not in cluster.caches.cache("configmaps"):
                reason = cluster.caches.foreign.reasons.get(group.uid)
                assert reason == reason_from_scratch(cluster, group), (event, group.uid)
        for plural in ("pods", "resourceclaims"):
            for key in cluster.caches.cache(plural):
                assert cluster.caches.foreign.is_ours(plural, key) == scratch.is_ours(plural, key)
