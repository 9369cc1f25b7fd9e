"""Can this gang ever fit? On the empty cluster, with the most quota its queue could get.

A gang that fails placement may only be waiting for others to finish, or it may be too
big for the cluster as it is: more devices than exist, more than its queue may ever use
(nominal plus borrowing limit, up the tree), or one pod larger than every node it may
run on. The second kind gets a reason saying so, with the numbers, instead of a
placement failure that reads like a wait. Only necessary conditions are checked (each
"never" is certain, a gang that passes may still not fit): required topology domains and
matchAttribute constraints are left to placement.

It is a reason, not a rejection: nodes, devices and queues can change, so the answer is
cached per (gang shape, queue) only until they do (node, device-inventory and quota
generations), and a gang keeps being re-evaluated like any other pending one. Usage is
ignored throughout (no running gang, foreign pod or claim counts), so releases never
invalidate the cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.engine.devices import MatchKey, MatchSet
from controller.engine.errors import InvalidInput
from controller.engine.model import (
    AllocationMode,
    Gang,
    PodSet,
    Toleration,
    device_quota_resource,
)
from controller.engine.placement import GangPlan, match_key, minimum_charge
from controller.engine.quantity import format_canonical
from controller.engine.state import ClusterState

NEVER_FIT = "can never fit"
"""How every reason of this module starts, so callers can tell it from a wait."""

_CACHE_LIMIT = 4096


def is_never_fit(reason: str) -> bool:
    return reason.startswith(NEVER_FIT)


@dataclass(frozen=True, slots=True)
class QuotaCeiling:
    """The most of one resource a leaf queue may hold with nothing else running."""

    amount: int
    binding: str
    explanation: str


def quota_ceiling(state: ClusterState, leaf: str, resource: str) -> QuotaCeiling | None:
    """The leaf's headroom when all usage is zero: each queue on the path allows its
    pool plus its borrowing limit (a root: its pool), plus what the queues below it keep
    guaranteed. None if the resource is not quota-managed there."""
    quota = state.quota
    if resource not in quota.managed(leaf):
        return None

    def show(amount: int) -> str:
        return format_canonical(resource, amount)

    best: QuotaCeiling | None = None
    absorbed = 0
    for name in quota.path(leaf):
        queue = quota.get(name)
        if queue is None:
            break
        pool = quota.subtree_quota(name, resource)
        lim = queue.quota.get(resource)
        if queue.parent is None:
            limit: int | None = pool
            what = f"{show(pool)}, and a root queue cannot borrow"
        elif lim is not None and lim.borrowing_limit is not None:
            limit = pool + lim.borrowing_limit
            what = f"{show(pool)} + borrowing limit {show(lim.borrowing_limit)}"
        else:
            limit = None
            what = ""
        if limit is not None and (best is None or absorbed + limit < best.amount):
            kind = "nominal" if name == leaf else f"via queue {name}: quota"
            kept = f"; {show(absorbed)} kept for queues below it" if absorbed else ""
            best = QuotaCeiling(absorbed + limit, name, f"{kind} {what}{kept}")
        lending = lim.lending_limit if lim is not None else None
        absorbed += max(0, pool - lending) if lending is not None else 0
    return best


@dataclass(frozen=True, slots=True)
class _Nodes:
    """Nodes a pod set may use, and the largest and total allocatable over them."""

    names: frozenset[str]
    largest: dict[str, int]
    total: dict[str, int]


class NeverFit:
    """Answers `reason(state, gang)`; one per engine (it caches per state generation)."""

    def __init__(self) -> None:
        self._stamp: tuple[int, ...] = ()
        self._state_id = 0
        self._gangs: dict[tuple[object, str], str | None] = {}
        self._of_gang: dict[int, tuple[Gang, str | None]] = {}
        """`_gangs`' answer per gang object (by id, with the gang to check it): a shape's
        key hashes every pod set and claim again at each look-up."""
        self._nodes: dict[tuple[object, ...] | None, _Nodes] = {}
        self._hostable: dict[tuple[object, ...], int] = {}

    def reason(self, state: ClusterState, gang: Gang) -> str | None:
        """'can never fit: ...' with the numbers, or None if the gang might fit."""
        self._refresh(state)
        known = self._of_gang.get(id(gang))
        if known is not None and known[0] is gang:
            return known[1]
        key = (GangPlan.shape_of(gang), gang.queue)
        if key not in self._gangs:
            if len(self._gangs) >= _CACHE_LIMIT:
                self._gangs.clear()
            try:
                found = (
                    self._one_pod(state, gang)
                    or self._totals(state, gang)
                    or self._pods_per_node(state, gang)
                )
            except InvalidInput:
                found = None  # a request selector that does not compile: placement says so
            self._gangs[key] = None if found is None else f"{NEVER_FIT}: {found}"
        if len(self._of_gang) >= _CACHE_LIMIT:
            self._of_gang.clear()
        answer = self._of_gang[id(gang)] = (gang, self._gangs[key])
        return answer[1]

    def _refresh(self, state: ClusterState) -> None:
        stamp = (
            id(state),
            state.node_generation,
            state.inventory.generation,
            state.quota.generation,
        )
        if stamp != self._stamp:
            self._stamp = stamp
            self._gangs.clear()
            self._of_gang.clear()
            self._nodes.clear()
            self._hostable.clear()

    # ---- the whole gang ------------------------------------------------------------------
    def _totals(self, state: ClusterState, gang: Gang) -> str | None:
        """A resource the gang needs more of than the cluster has or its queue may use."""
        for resource, need in sorted(minimum_charge(gang).items()):
            if not need:
                continue
            parts = []
            has = self._cluster_total(state, resource)
            if has is not None and need > has:
                parts.append(f"the cluster has {format_canonical(resource, has)}")
            ceiling = quota_ceiling(state, gang.queue, resource)
            if ceiling is not None and need > ceiling.amount:
                parts.append(
                    f"queue {gang.queue} may use at most "
                    f"{format_canonical(resource, ceiling.amount)} ({ceiling.explanation})"
                )
            if parts:
                return f"needs {format_canonical(resource, need)} {resource}; " + " and ".join(
                    parts
                )
        # devices a request narrows with selectors: fewer than its class has
        devices: dict[MatchKey, int] = {}
        for ps in gang.pod_sets:
            for mk, count in _exact_devices(ps).items():
                devices[mk] = devices.get(mk, 0) + count * ps.count
        for mk, count in sorted(devices.items()):
            ms = state.inventory.match_set(mk)
            if not ms.shareable and count > _devices(ms):
                return f"needs {count} devices {_describe(mk)}; {_devices(ms)} exist"
        return None

    def _cluster_total(self, state: ClusterState, resource: str) -> int | None:
        """All of a resource on schedulable nodes, or all devices of a class (None when
        shareable devices match: they bound nothing)."""
        prefix = device_quota_resource("")
        if resource.startswith(prefix):
            ms = state.inventory.match_set((resource[len(prefix) :], ()))
            return None if ms.shareable else _devices(ms)
        return self._eligible(state, None).total.get(resource, 0)

    # ---- one pod set at a time -------------------------------------------------------
    def _one_pod(self, state: ClusterState, gang: Gang) -> str | None:
        for ps in gang.pod_sets:
            found = self._pod_too_big(state, ps)
            if found is not None:
                return f"pod set {ps.name}: {found}"
        return None

    def _pods_per_node(self, state: ClusterState, gang: Gang) -> str | None:
        for ps in gang.pod_sets:
            nodes = self._eligible(state, ps.node_selector, ps.tolerations)
            hostable = self._hostable_pods(state, ps, nodes)
            if ps.count > hostable:
                return (
                    f"pod set {ps.name}: needs {ps.count} pods but the {_node_word(ps)}s "
                    f"can hold at most {hostable}"
                )
        return None

    def _pod_too_big(self, state: ClusterState, ps: PodSet) -> str | None:
        nodes = self._eligible(state, ps.node_selector, ps.tolerations)
        if not nodes.names:
            return "no schedulable node matches its node selector and tolerations"
        node_word = _node_word(ps)
        for resource, amount in sorted(_pod_requests(ps).items()):
            largest = nodes.largest.get(resource, 0)
            if amount > largest:
                return (
                    f"one pod needs {resource} {format_canonical(resource, amount)} "
                    f"but the largest {node_word} has {format_canonical(resource, largest)}"
                )
        inv = state.inventory
        for claim in ps.claims:
            for req in claim.spec.requests:
                sets = [(sub, inv.match_set(match_key(sub))) for sub in req.alternatives]
                if all(ms.class_missing for _, ms in sets):
                    missing = ", ".join(sorted({sub.device_class for sub, _ in sets}))
                    return f"claim {claim.name}: DeviceClass {missing} does not exist"
                if not any(_devices(ms) for _, ms in sets):
                    what = " or ".join(_describe(match_key(sub)) for sub, _ in sets)
                    return f"claim {claim.name}: no device matches {what}"
        for mk, count in sorted(_exact_devices(ps).items()):
            ms = inv.match_set(mk)
            most = max((_reachable(ms, n) for n in nodes.names), default=0)
            if not ms.shareable and count > most:
                return (
                    f"one pod needs {count} devices {_describe(mk)} "
                    f"but the most any {node_word} reaches is {most}"
                )
        return None

    def _eligible(
        self,
        state: ClusterState,
        selector: Mapping[str, str] | None,
        tolerations: tuple[Toleration, ...] = (),
    ) -> _Nodes:
        """Nodes a pod set with this selector and tolerations may use; `None`: every
        schedulable node, whatever its taints (what some pod set of a gang might use)."""
        key = None if selector is None else (tuple(sorted(selector.items())), tolerations)
        hit = self._nodes.get(key)
        if hit is None:
            if selector is None:
                names = frozenset(n for n, u in state.nodes.items() if not u.node.unschedulable)
            else:
                names = state.eligible_nodes(selector, tolerations)
            largest: dict[str, int] = {}
            total: dict[str, int] = {}
            for name in names:
                for resource, amount in state.nodes[name].node.allocatable.items():
                    largest[resource] = max(largest.get(resource, 0), amount)
                    total[resource] = total.get(resource, 0) + amount
            hit = self._nodes[key] = _Nodes(names, largest, total)
        return hit

    def _hostable_pods(self, state: ClusterState, ps: PodSet, nodes: _Nodes) -> int:
        """An upper bound on how many pods of the set the empty nodes could hold: per
        node, the fewest by any resource or device request, summed."""
        requests = _pod_requests(ps)
        devices = _exact_devices(ps)
        key = (
            tuple(sorted(requests.items())),
            tuple(sorted(devices.items())),
            tuple(sorted(ps.node_selector.items())),
            ps.tolerations,
        )
        hit = self._hostable.get(key)
        if hit is None:
            inv = state.inventory
            sets = [(inv.match_set(mk), n) for mk, n in devices.items()]
            sets = [(ms, n) for ms, n in sets if not ms.shareable]
            hit = 0
            for name in nodes.names:
                alloc = state.nodes[name].node.allocatable
                fits = min(alloc.get(r, 0) // v for r, v in requests.items() if v)
                for ms, per_pod in sets:
                    fits = min(fits, _reachable(ms, name) // per_pod)
                hit += fits
            for ms, per_pod in sets:
                hit = min(hit, _devices(ms) // per_pod)
            self._hostable[key] = hit
        return hit


def _node_word(ps: PodSet) -> str:
    return "node" if not ps.node_selector and not ps.tolerations else "eligible node"


def _pod_requests(ps: PodSet) -> dict[str, int]:
    """What one pod takes of a node, counting itself against the node's pod limit."""
    return {**ps.requests, "pods": ps.requests.get("pods", 0) + 1}


def _exact_devices(ps: PodSet) -> dict[MatchKey, int]:
    """Devices one pod needs per match key, over its requests that have one way only."""
    out: dict[MatchKey, int] = {}
    for claim in ps.claims:
        for req in claim.spec.requests:
            sub = req.alternatives[0]
            if len(req.alternatives) == 1 and sub.mode is AllocationMode.EXACT_COUNT:
                mk = match_key(sub)
                out[mk] = out.get(mk, 0) + sub.count
    return out


def _devices(ms: MatchSet) -> int:
    return sum(len(keys) for keys in ms.by_node.values())


def _reachable(ms: MatchSet, node: str) -> int:
    """Matching devices a pod on `node` can use: the node's own and network-attached."""
    return len(ms.by_node.get(node, ())) + len(ms.by_node.get(None, ()))


def _describe(mk: MatchKey) -> str:
    class_name, selectors = mk
    where = f" with selectors {' && '.join(selectors)}" if selectors else ""
    return f"of DeviceClass {class_name}{where}"
