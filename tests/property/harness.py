"""Drive a ClusterState + Engine through generated operations, and check what must hold.

The checks here are written from design.md and the model types, not from the engine's
own bookkeeping, so they can disagree with it: device owners and node usage are
recomputed from reservations, claims are re-validated against their specs, and quota is
re-derived by an independent implementation of the model stated in quota.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, settings

from controller.engine.context import CycleContext
from controller.engine.cycle import CycleResult, Decision, Engine, Outcome
from controller.engine.model import (
    AllocationMode,
    Device,
    DeviceKey,
    Gang,
    Queue,
    QuotaLimit,
    TopologyMode,
    device_quota_resource,
)
from controller.engine.policy import NoPreemption
from controller.engine.quota import QuotaTree
from controller.engine.reservation import Reservation
from controller.engine.state import ClusterState
from policies.registry import PolicyRef, create_ordering, create_preemption
from tests.builders import DRIVER
from tests.property.strategies import (
    GPU_CLASS,
    SELECTOR_ORACLE,
    ClusterSpec,
    Op,
    same_typed_value,
)


def property_settings(examples: int) -> settings:
    """Settings for one property; PROPERTY_EXAMPLES_SCALE=k runs k times as many examples."""
    scale = float(os.environ.get("PROPERTY_EXAMPLES_SCALE", "1"))
    return settings(
        max_examples=max(1, int(examples * scale)),
        deadline=None,
        # No "explain" phase: its line tracing makes a failing run several times slower.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---- building ---------------------------------------------------------------------------


def build_state(
    spec: ClusterSpec,
    nodes: Sequence[int] | None = None,
    slices: Sequence[int] | None = None,
    queues: Sequence[int] | None = None,
) -> ClusterState:
    """A fresh state from `spec`; the optional index lists give the insertion order."""
    state = ClusterState()
    state.upsert_device_class(GPU_CLASS)
    for i in nodes if nodes is not None else range(len(spec.nodes)):
        state.upsert_node(spec.nodes[i])
    for i in slices if slices is not None else range(len(spec.slices)):
        state.upsert_slice(spec.slices[i])
    for i in queues if queues is not None else range(len(spec.queues)):
        state.upsert_queue(spec.queues[i])
    return state


def rebuild(live: ClusterState) -> ClusterState:
    """A controller starting on the current objects: nodes, slices, classes, queues (a
    deleted one is still an object, kept by its finalizer, until quota.py drops it),
    namespaces, foreign holders, admission records restored, pending gangs with their
    recorded waiting start; deletions applied after the admissions are restored."""
    state = ClusterState()
    state.now = live.now
    for dc in live.inventory.classes.values():
        state.upsert_device_class(dc)
    for usage in live.nodes.values():
        state.upsert_node(usage.node)
    for rs in live.inventory.slices.values():
        state.upsert_slice(rs)
    quota = live.quota
    for name in quota.names():
        queue = quota.get(name)
        assert queue is not None
        state.upsert_queue(queue)
    for ns, labels in live.namespaces.items():
        state.set_namespace(ns, labels)
    for key, (node, requests) in sorted(live.foreign_pods.items()):
        state.add_foreign_pod(key, node, requests)
    for key, devices in sorted(live.foreign_claims.items()):
        state.add_foreign_claim(key, devices)
    for uid, reservation in sorted(live.admitted.items()):
        state.restore(live.admitted_gangs[uid], reservation)
    for uid, gang in sorted(live.pending.items()):
        state.add_gang(gang)
        state.pending_since[uid] = live.pending_since[uid]
    for name in quota.names():
        if quota.is_deleted(name):
            state.remove_queue(name)
    return state


@dataclass
class EvictLowerPriority:
    """A test preemption policy: evict every admitted gang of lower priority (or, with
    `equal`, of lower or equal priority), lowest first. Crude, but within the contract:
    it names whole admitted gangs, which is all the engine may rely on."""

    equal: bool = False
    name: str = "test-lower-priority"

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return True

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        lower = [
            g
            for g in ctx.state.admitted_gangs.values()
            if g.priority < gang.priority or (self.equal and g.priority == gang.priority)
        ]
        return [g.uid for g in sorted(lower, key=lambda g: (g.priority, -g.created, g.uid))]


def clock(step: int) -> float:
    """Virtual time of a step: ten minutes each, so waits pass starvation limits."""
    return 600.0 * step


REAL_PREEMPTION = ("priority", "reclaim", "fair-share", "cost-aware")
PREEMPTION_PARAMS: dict[str, dict[str, object]] = {
    "priority": {"scope": "cluster"},
    "cost-aware": {"scope": "cluster"},
    "reclaim-lower": {"priority": "lower"},
}


def make_engine(state: ClusterState, preempt: str, ordering: str = "priority") -> Engine:
    """`preempt`: "none", "lower" or "lower-or-equal" (see EvictLowerPriority), or a
    shipped preemption policy by name (REAL_PREEMPTION, with cluster scope where it has
    one, so victims come from every queue; "reclaim-lower" is reclaim of lower priority
    only); `ordering` names a shipped ordering policy."""
    order = create_ordering(ordering)
    if preempt == "none":
        return Engine(state, ordering=order, preemption=NoPreemption())
    if preempt in (*REAL_PREEMPTION, "reclaim-lower"):
        name = preempt.removesuffix("-lower")
        policy = create_preemption(PolicyRef(name, PREEMPTION_PARAMS.get(preempt, {})))
        return Engine(state, ordering=order, preemption=policy)
    double = EvictLowerPriority(equal=preempt == "lower-or-equal")
    return Engine(state, ordering=order, preemption=double)


# ---- snapshots --------------------------------------------------------------------------


def nonzero(m: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in m.items() if v}


@dataclass(frozen=True)
class Snapshot:
    node_usage: dict[str, dict[str, int]]
    owners: dict[DeviceKey, frozenset[str]]
    pool_usage: dict[str, dict[str, int]]
    leaf_usage: dict[str, dict[str, int]]
    pending: frozenset[str]
    admitted: dict[str, Reservation]

    @staticmethod
    def of(state: ClusterState) -> Snapshot:
        q = state.quota
        return Snapshot(
            {n: dict(u.used) for n, u in state.nodes.items()},
            {dk: frozenset(o) for dk, o in state.inventory.owners.items() if o},
            {name: nonzero(q.pool_usage(name)) for name in q.names()},
            {name: used for name in q.names() if (used := nonzero(q.usage(name)))},
            frozenset(state.pending),
            dict(state.admitted),
        )

    def without(self, res: Reservation, gang: Gang, requeue: bool) -> Snapshot:
        """What this snapshot should become when the gang holding `res` is released."""
        nodes = {n: dict(u) for n, u in self.node_usage.items()}
        owners = {dk: set(o) for dk, o in self.owners.items()}
        for pod in res.pods:
            if pod.node in nodes:
                used = nodes[pod.node]
                for r, v in pod.requests.items():
                    used[r] = used.get(r, 0) - v
                nodes[pod.node] = nonzero(used)
            for claim in pod.claims:
                for da in claim.devices:
                    owners.get(da.device, set()).discard(pod.claim_owner(res.gang_uid, claim.claim))
        leaf = dict(self.leaf_usage)
        mine = dict(leaf.get(res.queue, {}))
        for r, v in res.charge.items():
            mine[r] = mine.get(r, 0) - v
        leaf[res.queue] = nonzero(mine)
        if not leaf[res.queue]:
            del leaf[res.queue]  # a deleted queue is dropped with its last gang
        admitted = {u: r for u, r in self.admitted.items() if u != res.gang_uid}
        pending = self.pending | {gang.uid} if requeue else self.pending
        return Snapshot(
            nodes,
            {dk: frozenset(o) for dk, o in owners.items() if o},
            {},
            leaf,
            pending,
            admitted,
        )

    def diff(self, other: Snapshot, fields: Iterable[str] | None = None) -> list[str]:
        out = []
        for f in fields or self.__dataclass_fields__:
            a, b = getattr(self, f), getattr(other, f)
            if a != b:
                out.append(f"{f}: {a!r} != {b!r}")
        return out


# ---- the driver -------------------------------------------------------------------------

RELEASE_FIELDS = ("node_usage", "owners", "leaf_usage", "pending", "admitted")
USAGE_FIELDS = ("node_usage", "owners", "pool_usage", "leaf_usage")

CycleHook = Callable[["Driver", Op, Snapshot, CycleResult], None]


@dataclass
class Driver:
    """Applies operations to one state; records every decision for determinism checks."""

    spec: ClusterSpec
    state: ClusterState
    engine: Engine
    log: list[object] = field(default_factory=list)
    step: int = 0
    after_cycle: CycleHook | None = None
    check_release: bool = False
    last_commits: list[Reservation] = field(default_factory=list)
    record_errors: bool = False
    release_problems: list[str] = field(default_factory=list)
    delete_any_queue: bool = False
    """Let `remove_queue` delete queues whose quota others may be borrowing (see there)."""

    @staticmethod
    def of(
        spec: ClusterSpec,
        preempt: str,
        state: ClusterState | None = None,
        ordering: str = "priority",
    ) -> Driver:
        state = state if state is not None else build_state(spec)
        return Driver(spec, state, make_engine(state, preempt, ordering))

    def apply(self, op: Op) -> None:
        self.step += 1
        try:
            getattr(self, f"_op_{op[0]}")(*op[1:])
        except Exception as err:
            if not self.record_errors:
                raise
            self.log.append(("error", type(err).__name__, str(err)))

    def _op_add(self, gang: Gang) -> None:
        self.state.add_gang(gang)

    def _op_cycle(self, mode: str, choices: Sequence[bool] = ()) -> None:
        before = Snapshot.of(self.state)
        self.state.now = clock(self.step)
        result = self.engine.cycle()
        self.log.append(("cycle", [decision_record(d) for d in result.decisions]))
        ledger = result.ledger
        self.last_commits = []
        if mode == "commit":
            self.last_commits = ledger.commit_all()
        elif mode == "rollback":
            ledger.rollback_all()
        else:
            # Per gang, in admission order, as the controller writes admission records.
            # Rolling one back may roll back later ones too (they are then skipped).
            for i, uid in enumerate(ledger.open_uids()):
                if uid not in ledger.open_uids():
                    continue
                if choices[i] if i < len(choices) else True:
                    self.last_commits.append(ledger.commit(uid))
                else:
                    ledger.rollback(uid)
        if self.after_cycle is not None:
            self.after_cycle(self, ("cycle", mode, tuple(choices)), before, result)

    def _op_release(self, i: int, requeue: bool) -> None:
        admitted = sorted(self.state.admitted)
        if admitted:
            uid = admitted[i % len(admitted)]
            self.log.append(("release", uid, self.release(uid, requeue)))

    def _op_remove_node(self, i: int) -> None:
        names = sorted(self.state.nodes)
        if len(names) > 1:
            name = names[i % len(names)]
            evicted = self.state.remove_node(name)
            self.log.append(("remove_node", name, evicted))
            for uid in evicted:
                self.release(uid, True)

    def release(self, uid: str, requeue: bool) -> Reservation:
        """`state.release`, checking (if asked) that exactly the reservation comes back."""
        if not self.check_release:
            return self.state.release(uid, requeue=requeue)
        before = Snapshot.of(self.state)
        gang = self.state.admitted_gangs[uid]
        res = self.state.release(uid, requeue=requeue)
        want = before.without(res, gang, requeue)
        problems = want.diff(Snapshot.of(self.state), RELEASE_FIELDS)
        self.release_problems += [f"step {self.step}: release {uid}: {p}" for p in problems]
        return res

    def _op_foreign_pod(self, i: int, cpu: int) -> None:
        names = sorted(self.state.nodes)
        name = names[i % len(names)]
        requests = {"cpu": cpu, "pods": 1}
        if self.state.nodes[name].fits(requests):
            self.state.add_foreign_pod(f"fp{self.step}", name, requests)

    def _op_foreign_claim(self, i: int, j: int) -> None:
        names = sorted(self.state.nodes)
        name = names[i % len(names)]
        devices = self.state.inventory.devices_on(name)
        if devices:
            dk = devices[j % len(devices)]
            if not self.state.inventory.owners.get(dk):
                self.state.add_foreign_claim(f"fc{self.step}", (dk,))

    def _op_remove_foreign(self, i: int) -> None:
        keys = sorted(self.state.foreign_pods) + sorted(self.state.foreign_claims)
        if keys:
            key = keys[i % len(keys)]
            if key in self.state.foreign_pods:
                self.state.remove_foreign_pod(key)
            else:
                self.state.remove_foreign_claim(key)

    def _op_node(self, i: int) -> None:
        """Publish a node from the spec again: unchanged, or back after its removal."""
        self.state.upsert_node(self.spec.nodes[i % len(self.spec.nodes)])

    def _op_slice(self, i: int, action: str) -> None:
        """Re-publish a slice from the spec (unchanged, or back after removal), or remove
        it: a driver restart; devices held meanwhile stay held."""
        if not self.spec.slices:
            return
        rs = self.spec.slices[i % len(self.spec.slices)]
        if action == "remove":
            self.state.remove_slice(rs.name)
        else:
            self.state.upsert_slice(rs)

    def _op_add_queue(self, i: int, quota: Mapping[str, QuotaLimit]) -> None:
        """A new queue under an existing one (a leaf, possibly holding usage, becomes inner).
        Its quota names only resources the tree manages already, so it only adds quota and
        can never make usage exceed limits."""
        names = self.state.quota.names()
        if not names:
            return
        parent = names[i % len(names)]
        managed = self.state.quota.managed(parent)
        quota = {r: lim for r, lim in quota.items() if r in managed}
        self.state.upsert_queue(Queue(f"{parent}.new{self.step}", parent, quota))

    def _op_remove_queue(self, i: int) -> None:
        """Delete a queue (tombstone or gone, see quota.py). Unless `delete_any_queue`,
        only one whose drop can never take quota from running gangs (like the other
        queue operations, which only loosen): a root, or one lending nothing to its
        parent."""
        quota = self.state.quota
        names = [n for n in quota.names() if self.delete_any_queue or _lends_nothing(quota, n)]
        if names:
            self.state.remove_queue(names[i % len(names)])

    def _op_remove_gang(self, i: int) -> None:
        """Forget a gang for good (its object deleted), pending or admitted."""
        uids = sorted(set(self.state.pending) | set(self.state.admitted))
        if uids:
            uid = uids[i % len(uids)]
            self.log.append(("remove_gang", uid))
            self.state.remove_gang(uid)

    def _op_rebuild(self) -> None:
        """A controller restart: a state built from the objects (`rebuild`), the same
        policy objects deciding on it."""
        self.state = rebuild(self.state)
        old = self.engine
        self.engine = Engine(
            self.state, ordering=old.ordering, preemption=old.preemption, placement=old.placement
        )

    def _op_touch_queue(self, i: int, loosen: bool) -> None:
        """Re-publish a queue unchanged, or with every nominal quota raised (only loosens)."""
        queue = self.spec.queues[i % len(self.spec.queues)]
        if loosen:
            quota = {
                r: QuotaLimit(q.nominal + 2, q.borrowing_limit, q.lending_limit)
                for r, q in queue.quota.items()
            }
            queue = Queue(queue.name, queue.parent, quota, queue.weight)
        self.state.upsert_queue(queue)


def _lends_nothing(quota: QuotaTree, name: str) -> bool:
    queue = quota.get(name)
    if queue is None or queue.parent is None or quota.get(queue.parent) is None:
        return True
    for r in quota.managed(name):
        sub = quota.subtree_quota(name, r)
        lim = queue.quota.get(r)
        lent = sub if lim is None or lim.lending_limit is None else min(lim.lending_limit, sub)
        if lent:
            return False
    return True


def decision_record(d: Decision) -> tuple[object, ...]:
    return (d.gang_uid, d.outcome, d.reason, d.reservation, d.victims)


# ---- invariant checks -------------------------------------------------------------------


def quota_bookkeeping_problems(q: QuotaTree) -> list[str]:
    """Incremental pool usage must equal the from-scratch recomputation (non-zero parts)."""
    recomputed = {k: nonzero(v) for k, v in q.recomputed_pool_usage().items()}
    out = []
    for name in sorted(set(recomputed) | set(q.names())):
        inc = nonzero(q.pool_usage(name))
        rec = recomputed.get(name, {})
        if inc != rec:
            out.append(f"queue {name}: incremental pool usage {inc} != recomputed {rec}")
    return out


def index_problems(state: ClusterState) -> list[str]:
    """Derived indexes (free cpu order, match-set free counts, held devices) agree with
    the raw state."""
    out = []
    state._sorted_cpu()  # kept lazily: up to date whenever it is read
    want_cpu = sorted((u.free("cpu"), n) for n, u in state.nodes.items())
    if list(state._free_cpu) != want_cpu:
        out.append(f"free-cpu index {list(state._free_cpu)} != {want_cpu}")
    inv = state.inventory
    held = len(inv.owners.keys() & inv.devices.keys())
    if inv.held_published != held:
        out.append(f"held published devices {inv.held_published} != recounted {held}")
    for mk, ms in inv._matches.items():
        want_members = sorted(dk for dk, d in inv.devices.items() if _matches(mk, d))
        members = sorted(dk for devices in ms.by_node.values() for dk in devices)
        if members != want_members:
            out.append(f"match set {mk}: members {members} != published matches {want_members}")
        if ms.total_free() != sum(ms.free.values()):
            out.append(f"match set {mk}: total free {ms.total_free()} != {sum(ms.free.values())}")
        for node in set(ms.free) - set(ms.by_node):
            if ms.free[node]:
                out.append(f"match set {mk}: node {node} free {ms.free[node]} with no devices")
        for node, devices in ms.by_node.items():
            free = sum(1 for dk in devices if inv.is_free(dk))
            if ms.free.get(node, 0) != free:
                out.append(f"match set {mk}: node {node} free {ms.free.get(node, 0)} != {free}")
            if node is not None:
                levels = [k for k, members in ms.buckets.items() if node in members]
                if levels != ([free] if free else []):
                    out.append(f"match set {mk}: node {node} in buckets {levels}, free {free}")
    pending = [g.uid for g in state.pending_in_order()]
    want = [g.uid for g in sorted(state.pending.values(), key=lambda g: g.order_key)]
    if pending != want:
        out.append(f"pending order {pending} != {want}")
    return out


def _matches(mk: tuple[str, tuple[str, ...]], d: Device) -> bool:
    """What the test classes select, evaluated without CEL: class `gpu` is the driver,
    request selectors are those of SELECTOR_ORACLE."""
    cls, selectors = mk
    assert cls == GPU_CLASS.name and set(selectors) <= set(SELECTOR_ORACLE), mk
    return d.driver == DRIVER and all(SELECTOR_ORACLE[s](d) for s in selectors)


def typed_values(values: Iterable[object]) -> list[object]:
    """Distinct attribute values as DRA counts them (True, 1 and "1" are three)."""
    out: list[object] = []
    for v in values:
        if not any(same_typed_value(v, seen) for seen in out):
            out.append(v)
    return out


def invariant_problems(state: ClusterState) -> list[str]:
    return state.violations() + quota_bookkeeping_problems(state.quota) + index_problems(state)


def all_or_nothing_problems(state: ClusterState) -> list[str]:
    """Invariant 3 and reservation validity, recomputed from reservations and specs.

    Every admitted gang holds every pod, each claim holds exactly what its requests ask
    for (on the pod's node, honouring selectors and matchAttribute), required topology
    holds, the charge is what the pods use, and nothing else holds a device or node
    usage (device owners and node usage equal admitted reservations + foreign holders).
    """
    out: list[str] = []
    inv = state.inventory
    owners: dict[DeviceKey, set[str]] = {}
    usage: dict[str, dict[str, int]] = {n: {} for n in state.nodes}
    for key, devices in state.foreign_claims.items():
        for dk in devices:
            owners.setdefault(dk, set()).add(f"foreign:{key}")
    for node, requests in state.foreign_pods.values():
        for r, v in requests.items():
            if node in usage:
                usage[node][r] = usage[node].get(r, 0) + v
    if set(state.admitted) != set(state.admitted_gangs):
        out.append(f"admitted {sorted(state.admitted)} != {sorted(state.admitted_gangs)}")
    if set(state.admitted) & set(state.pending):
        out.append(f"both admitted and pending: {sorted(set(state.admitted) & set(state.pending))}")
    for uid, res in sorted(state.admitted.items()):
        gang = state.admitted_gangs.get(uid)
        if gang is None:
            continue
        where = f"gang {uid}"
        want_pods = sorted((ps.name, i) for ps in gang.pod_sets for i in range(ps.count))
        got_pods = sorted((p.pod_set, p.index) for p in res.pods)
        if got_pods != want_pods or len(res.pods) != gang.pod_count:
            out.append(f"{where}: pods {got_pods} != {want_pods}")
        charge: dict[str, int] = {}
        all_devices: list[DeviceKey] = []
        pod_sets = {ps.name: ps for ps in gang.pod_sets}
        for pod in res.pods:
            ps = pod_sets.get(pod.pod_set)
            pw = f"{where} pod {pod.pod_set}-{pod.index}"
            if ps is None:
                out.append(f"{pw}: unknown pod set")
                continue
            for r, v in pod.requests.items():
                charge[r] = charge.get(r, 0) + v
                if pod.node in usage:
                    usage[pod.node][r] = usage[pod.node].get(r, 0) + v
            want_req = nonzero({**ps.requests, "pods": ps.requests.get("pods", 0) + 1})
            if nonzero(pod.requests) != want_req:
                out.append(f"{pw}: requests {dict(pod.requests)} != {want_req}")
            node = state.nodes.get(pod.node)
            if node is None:
                out.append(f"{pw}: on missing node {pod.node}")
            elif any(node.node.labels.get(k) != v for k, v in ps.node_selector.items()):
                out.append(f"{pw}: node {pod.node} does not match {dict(ps.node_selector)}")
            if [c.claim for c in pod.claims] != [c.name for c in ps.claims]:
                out.append(f"{pw}: claims {[c.claim for c in pod.claims]}")
                continue
            pod_devices: list[DeviceKey] = []
            for alloc, claim in zip(pod.claims, ps.claims, strict=True):
                cw = f"{pw} claim {claim.name}"
                owner = pod.claim_owner(uid, claim.name)
                by_request: dict[str, list[tuple[str, DeviceKey, str]]] = {}
                for da in alloc.devices:
                    req, _, sub = da.request.partition("/")
                    by_request.setdefault(req, []).append((sub, da.device, da.device_class))
                    owners.setdefault(da.device, set()).add(owner)
                    pod_devices.append(da.device)
                    key = device_quota_resource(da.device_class)
                    charge[key] = charge.get(key, 0) + 1
                    d = inv.devices.get(da.device)  # None: unpublished since (still held)
                    if d is not None and d.node != pod.node:
                        out.append(f"{cw}: device {da.device} is not on node {pod.node}")
                if set(by_request) - {r.name for r in claim.spec.requests}:
                    out.append(f"{cw}: unknown requests {sorted(by_request)}")
                for req in claim.spec.requests:
                    got = by_request.get(req.name, [])
                    subs = {s for s, _, _ in got}
                    if req.first_available:
                        alts = [a for a in req.alternatives if {a.name} == subs]
                        if len(alts) != 1:
                            out.append(f"{cw}: request {req.name} used sub-requests {subs}")
                            continue
                        alt = alts[0]
                    else:
                        alt = req.alternatives[0]
                        if subs != {""}:
                            out.append(f"{cw}: request {req.name} used sub-requests {subs}")
                    assert alt.mode is AllocationMode.EXACT_COUNT
                    if len(got) != alt.count:
                        out.append(f"{cw}: request {req.name} has {len(got)} of {alt.count}")
                    for _, dk, cls in got:
                        d = inv.devices.get(dk)
                        if cls != alt.device_class:
                            out.append(f"{cw}: {dk} charged as {cls}, not {alt.device_class}")
                        for sel in alt.selectors:
                            if d is not None and not SELECTOR_ORACLE[sel](d):
                                out.append(f"{cw}: {dk} does not match selector {sel}")
                for c in claim.spec.constraints:
                    names = c.requests or tuple(r.name for r in claim.spec.requests)
                    values = typed_values(
                        inv.devices[dk].attributes.get(c.attribute)
                        for n in names
                        for _, dk, _ in by_request.get(n, [])
                        if dk in inv.devices
                    )
                    if len(values) > 1 or None in values:
                        out.append(f"{cw}: matchAttribute {c.attribute} over {names}: {values}")
            if len(set(pod_devices)) != len(pod_devices):
                out.append(f"{pw}: a device is used twice in one pod: {pod_devices}")
            all_devices.extend(pod_devices)
        if nonzero(res.charge) != nonzero(charge):
            out.append(f"{where}: charge {dict(res.charge)} != what its pods hold {charge}")
        topo = gang.topology
        if topo is not None and topo.mode is TopologyMode.REQUIRED:
            if topo.device_attribute:
                # Checkable while the gang's devices and its nodes' slices are published
                # (a removed slice takes the attribute values with it).
                published = all(dk in inv.devices for dk in all_devices)
                values = typed_values(
                    inv.devices[dk].attributes.get(topo.key)
                    for dk in all_devices
                    if dk in inv.devices
                )
                domain_nodes = {
                    d.node
                    for d in inv.devices.values()
                    if any(same_typed_value(d.attributes.get(topo.key), v) for v in values)
                }
                stray = {
                    p.node
                    for p in res.pods
                    if p.node not in domain_nodes and inv.devices_on(p.node)
                }
                if published and (len(values) > 1 or None in values or (values and stray)):
                    out.append(f"{where}: required {topo.key}: values {values}, nodes {stray}")
            else:
                labels = {
                    state.nodes[p.node].node.labels.get(topo.key)
                    for p in res.pods
                    if p.node in state.nodes
                }
                if len(labels) > 1 or None in labels:
                    out.append(f"{where}: required {topo.key}: pods in {labels}")
    actual = {dk: set(o) for dk, o in inv.owners.items() if o}
    if actual != owners:
        extra = {dk: sorted(o - owners.get(dk, set())) for dk, o in actual.items()}
        missing = {dk: sorted(o - actual.get(dk, set())) for dk, o in owners.items()}
        out.append(
            "device owners differ from reservations + foreign claims: extra "
            f"{ {k: v for k, v in extra.items() if v} }, missing "
            f"{ {k: v for k, v in missing.items() if v} }"
        )
    for name, u in sorted(state.nodes.items()):
        want = nonzero(usage[name])
        if nonzero(u.used) != want:
            out.append(f"node {name}: usage {u.used} != admitted + foreign {want}")
    return out


def admitted_in(result: CycleResult) -> list[str]:
    return [d.gang_uid for d in result.decisions if d.outcome is Outcome.ADMITTED]


def undo_and_redo(
    state: ClusterState,
    before: Snapshot,
    result: CycleResult,
    order: Callable[[list[str]], list[str]] = list,
    requeue: bool = True,
    fields: Iterable[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Take back what a resolved cycle kept, by hand, and compare with `before`.

    Releases every gang the cycle admitted that is still admitted (in `order`), then
    restores the gangs they evicted from their pre-cycle reservations: the state must be
    `before` again (on `fields`). Then evicts those again and restores the releases: the
    state must be what it was after the cycle. Returns (gangs released, problems).
    """
    after = Snapshot.of(state)
    kept = order([u for u in admitted_in(result) if u in state.admitted])
    if not kept:
        return [], []
    victims = [v for d in result.decisions if d.gang_uid in kept for v in d.victims]
    gangs = {u: state.admitted_gangs[u] for u in kept}
    held = {u: state.release(u, requeue=requeue) for u in kept}
    for v in victims:
        state.restore(state.pending[v], before.admitted[v])
    now = Snapshot.of(state)
    problems = [f"released {kept}, restored {victims}: {p}" for p in before.diff(now, fields)]
    for v in victims:
        state.release(v, requeue=True)
    for u in kept:
        state.restore(gangs[u], held[u])
    problems += [f"put back {kept}: {p}" for p in after.diff(Snapshot.of(state))]
    return kept, problems


# ---- an independent model of the quota tree (quota.py's module docstring) ---------------


@dataclass
class QuotaOracle:
    """Recomputes subtree / guaranteed / pool usage from queue specs and leaf usage."""

    queues: dict[str, Queue]

    def children(self, name: str) -> list[str]:
        return sorted(n for n, q in self.queues.items() if q.parent == name)

    def roots(self) -> list[str]:
        return sorted(n for n, q in self.queues.items() if q.parent is None)

    def tree(self, root: str) -> list[str]:
        out, stack = [], [root]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(self.children(n))
        return out

    def managed(self, root: str) -> set[str]:
        return {r for n in self.tree(root) for r in self.queues[n].quota}

    def _lim(self, name: str, r: str) -> QuotaLimit | None:
        return self.queues[name].quota.get(r)

    def subtree(self, name: str, r: str) -> int:
        lim = self._lim(name, r)
        own = lim.nominal if lim is not None else 0
        return own + sum(self.lendable(c, r) for c in self.children(name))

    def lendable(self, name: str, r: str) -> int:
        sub = self.subtree(name, r)
        lim = self._lim(name, r)
        if lim is None or lim.lending_limit is None:
            return sub
        return min(lim.lending_limit, sub)

    def guaranteed(self, name: str, r: str) -> int:
        return self.subtree(name, r) - self.lendable(name, r)

    def pool(self, name: str, r: str, usage: Mapping[str, Mapping[str, int]]) -> int:
        """W(X): X's own usage (a leaf's; or kept by a leaf that gained children) plus what
        each child needs beyond its guaranteed share."""
        own = usage.get(name, {}).get(r, 0)
        kids = self.children(name)
        return own + sum(max(0, self.pool(c, r, usage) - self.guaranteed(c, r)) for c in kids)

    def valid(self, usage: Mapping[str, Mapping[str, int]]) -> bool:
        return not self.problems(usage)

    def problems(self, usage: Mapping[str, Mapping[str, int]]) -> list[str]:
        out = []
        for root in self.roots():
            for r in sorted(self.managed(root)):
                for name in self.tree(root):
                    w = self.pool(name, r, usage)
                    sub = self.subtree(name, r)
                    if name == root:
                        if w > sub:
                            out.append(f"{name}: {r} {w} > {sub}")
                        continue
                    lim = self._lim(name, r)
                    b = lim.borrowing_limit if lim is not None else None
                    if b is not None and w - sub > b:
                        out.append(f"{name}: {r} borrows {w - sub} > {b}")
        return out

    def pools(self, usage: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for root in self.roots():
            managed = self.managed(root)
            for name in self.tree(root):
                out[name] = nonzero({r: self.pool(name, r, usage) for r in managed})
        return out


def add_usage(
    usage: Mapping[str, Mapping[str, int]], leaf: str, charge: Mapping[str, int], sign: int = 1
) -> dict[str, dict[str, int]]:
    out = {k: dict(v) for k, v in usage.items()}
    mine = out.setdefault(leaf, {})
    for r, v in charge.items():
        mine[r] = mine.get(r, 0) + sign * v
    return out
