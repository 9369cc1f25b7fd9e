"""Gang placement: every pod gets a node and every claim its devices, or nothing is held.

A placement attempt applies pods to the state one by one (so later pods see what earlier
ones took) and undoes them all if any pod finds no room. When the first greedy attempt
fails, a bounded search tries other attempts (other node orders, other pod-set orders,
other topology domains) and reports how far it went. A failure explains itself in terms
a user can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from controller.engine.devices import DeviceInventory, MatchKey
from controller.engine.model import (
    AllocationMode,
    ClaimSpec,
    DeviceKey,
    DeviceSubRequest,
    Gang,
    PodClaim,
    PodSet,
    Topology,
    TopologyMode,
    attribute_identity,
    device_quota_resource,
)
from controller.engine.policy import PlacementPolicy
from controller.engine.quantity import format_canonical
from controller.engine.reservation import ClaimAllocation, DeviceAllocation, PodPlacement
from controller.engine.state import ClusterState

DeviceFilter = Callable[[DeviceKey], bool]
CLAIM_SEARCH_STEPS = 256
"""Bound on backtracking steps for one claim's matchAttribute search on one node."""


def _any_device(_: DeviceKey) -> bool:
    return True


def match_key(sub: DeviceSubRequest) -> MatchKey:
    return (sub.device_class, sub.selectors)


@dataclass(frozen=True, slots=True)
class PodDemand:
    """What one pod of a pod set needs, with the device request that drives node choice."""

    pod_set: PodSet
    requests: dict[str, int]
    primary: tuple[MatchKey, int] | None

    @staticmethod
    def of(pod_set: PodSet) -> PodDemand:
        requests = dict(pod_set.requests)
        requests["pods"] = requests.get("pods", 0) + 1
        primary: tuple[MatchKey, int] | None = None
        for claim in pod_set.claims:
            for req in claim.spec.requests:
                if len(req.alternatives) != 1:
                    continue
                sub = req.alternatives[0]
                if sub.mode is AllocationMode.EXACT_COUNT and (
                    primary is None or sub.count > primary[1]
                ):
                    primary = (match_key(sub), sub.count)
        return PodDemand(pod_set, requests, primary)

    def candidates(
        self, state: ClusterState, eligible: frozenset[str], descending: bool
    ) -> Iterator[str]:
        """Eligible nodes with room for the primary device request (or cpu), in order."""
        if self.primary is not None:
            ms = state.inventory.match_set(self.primary[0])
            if not ms.free.get(None, 0):
                for n in ms.nodes_with_free(self.primary[1], descending):
                    if n in eligible:
                        yield n
                return
        for n in state.nodes_by_free_cpu(self.requests.get("cpu", 0), descending):
            if n in eligible:
                yield n

    def describe(self) -> str:
        parts = [f"{r} {format_canonical(r, v)}" for r, v in sorted(self.requests.items()) if v]
        for claim in self.pod_set.claims:
            for req in claim.spec.requests:
                alt = req.alternatives[0]
                count = "all" if alt.mode is AllocationMode.ALL else str(alt.count)
                parts.append(f"{count} x {alt.device_class}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Domain:
    """One topology domain: a node-label value or a device-attribute value."""

    value: str
    nodes: frozenset[str]
    pods_fitting: int
    device_filter: DeviceFilter | None = None
    whole_nodes: int = 0
    """Nodes whose every matching device of the domain (or all cpu) is free."""
    whole_pods: int = 0
    """Of pods_fitting, those only whole nodes could host: room that breaks a whole node."""

    def rank(self) -> tuple[int, str]:
        return (self.pods_fitting, self.value)


@dataclass
class GangPlan:
    """What the cycle needs of a gang, computed once: demands (largest first), an interned
    shape id (gangs of one shape fit or fail alike) and the quota it needs at least."""

    gang: Gang
    demands: list[PodDemand]
    shape_id: int
    minimum_charge: dict[str, int]

    @staticmethod
    def shape_of(gang: Gang) -> tuple[object, ...]:
        return (
            tuple(
                (
                    ps.count,
                    tuple(sorted(ps.requests.items())),
                    ps.claims,
                    tuple(sorted(ps.node_selector.items())),
                    ps.tolerations,
                )
                for ps in gang.pod_sets
            ),
            gang.topology,
        )

    @staticmethod
    def of(gang: Gang, shape_id: int) -> GangPlan:
        demands = sorted(
            (PodDemand.of(ps) for ps in gang.pod_sets),
            key=lambda d: (-(d.primary[1] if d.primary else 0), -d.requests.get("cpu", 0)),
        )
        return GangPlan(gang, demands, shape_id, minimum_charge(gang))


def minimum_charge(gang: Gang) -> dict[str, int]:
    """The quota a gang needs whatever devices it gets (firstAvailable left out)."""
    charge: dict[str, int] = {}
    for ps in gang.pod_sets:
        for r, v in ps.requests.items():
            charge[r] = charge.get(r, 0) + v * ps.count
        charge["pods"] = charge.get("pods", 0) + ps.count
        for claim in ps.claims:
            for req in claim.spec.requests:
                sub = req.alternatives[0]
                if len(req.alternatives) == 1 and sub.mode is AllocationMode.EXACT_COUNT:
                    key = device_quota_resource(sub.device_class)
                    charge[key] = charge.get(key, 0) + sub.count * ps.count
    return charge


@dataclass
class PlacementOutcome:
    """Pods placed (already applied to the state), or why not, and the search effort."""

    pods: tuple[PodPlacement, ...] | None
    attempts: int
    reason: str = ""


@dataclass
class _Failure:
    demand: PodDemand
    placed: int
    total: int
    domain: Domain | None = None

    def text(self) -> str:
        ps = self.demand.pod_set.name
        where = f" in {self.domain.value}" if self.domain is not None else ""
        return (
            f"pod set {ps}: placed {self.placed} of {self.total} pods{where}, "
            f"no node has room for the next ({self.demand.describe()})"
        )


def allocate_claims(
    inv: DeviceInventory,
    node: str,
    claims: tuple[PodClaim, ...],
    device_ok: DeviceFilter,
) -> tuple[ClaimAllocation, ...] | None:
    """Devices for every claim of one pod on `node`, or None; nothing is allocated here."""
    taken: set[DeviceKey] = set()
    out = []
    for claim in claims:
        budget = [CLAIM_SEARCH_STEPS]
        picks = _solve(inv, node, claim.spec, 0, {}, taken, device_ok, budget)
        if picks is None:
            return None
        taken.update(da.device for da in picks)
        out.append(ClaimAllocation(claim.name, tuple(picks)))
    return tuple(out)


def _candidates(
    inv: DeviceInventory, node: str, sub: DeviceSubRequest, device_ok: DeviceFilter
) -> tuple[list[DeviceKey], list[DeviceKey]]:
    """(usable devices, all matching devices) on the node and reachable from everywhere."""
    ms = inv.match_set(match_key(sub))
    matching = ms.by_node.get(node, []) + ms.by_node.get(None, [])
    usable = [dk for dk in matching if inv.is_free(dk) and device_ok(dk)]
    return usable, matching


def _solve(
    inv: DeviceInventory,
    node: str,
    spec: ClaimSpec,
    i: int,
    bound: dict[str, object],
    taken: set[DeviceKey],
    device_ok: DeviceFilter,
    budget: list[int],
) -> list[DeviceAllocation] | None:
    if i == len(spec.requests):
        return []
    budget[0] -= 1
    if budget[0] < 0:
        return None
    req = spec.requests[i]
    attrs = [c.attribute for c in spec.constraints if not c.requests or req.name in c.requests]
    for sub in req.alternatives:
        usable, matching = _candidates(inv, node, sub, device_ok)
        usable = [dk for dk in usable if dk not in taken]
        groups = _group(inv, usable, attrs, bound)
        for values, group in groups:
            if sub.mode is AllocationMode.ALL:
                if not matching or len(group) != len(matching):
                    continue
                picks = group
            else:
                if len(group) < sub.count:
                    continue
                picks = group[: sub.count]
            name = f"{req.name}/{sub.name}" if req.first_available else req.name
            rest = _solve(
                inv, node, spec, i + 1, {**bound, **values}, taken | set(picks), device_ok, budget
            )
            if rest is not None:
                return [
                    DeviceAllocation(name, dk, sub.device_class, inv.is_shareable(dk))
                    for dk in picks
                ] + rest
    return None


def _group(
    inv: DeviceInventory, devices: list[DeviceKey], attrs: list[str], bound: dict[str, object]
) -> list[tuple[dict[str, object], list[DeviceKey]]]:
    """Split devices by the values of constrained attributes (respecting bound ones)."""
    if not attrs:
        return [({}, devices)]
    groups: dict[tuple[object, ...], list[DeviceKey]] = {}
    for dk in devices:
        d = inv.devices.get(dk, None)
        if d is None:
            continue
        raw = tuple(d.attributes.get(a) for a in attrs)
        if any(v is None for v in raw):
            continue
        values = tuple(attribute_identity(v) for v in raw if v is not None)
        if any(a in bound and bound[a] != v for a, v in zip(attrs, values, strict=True)):
            continue
        groups.setdefault(values, []).append(dk)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), repr(kv[0])))
    return [(dict(zip(attrs, k, strict=True)), v) for k, v in ordered]


class Placer:
    """Places whole gangs on a ClusterState with one placement policy and a search bound."""

    def __init__(self, state: ClusterState, policy: PlacementPolicy, search_bound: int = 8):
        self.state = state
        self.policy = policy
        self._active = policy
        self.search_bound = max(1, search_bound)

    def place(self, plan: GangPlan) -> PlacementOutcome:
        """Place every pod or none; on success the pods are applied to the state."""
        precheck = self._precheck(plan)
        if precheck is not None:
            return PlacementOutcome(None, 0, precheck)
        self._active = policy = self.policy.for_gang(plan.gang)
        topo = policy.topology(plan.gang)
        if topo is None:
            return self._search_unconstrained(plan, 0, None)
        domains = self._domains(plan, topo)
        needed = sum(d.pod_set.count for d in plan.demands)
        lead_pods = plan.demands[0].pod_set.count
        ordered = policy.order_domains(plan.gang, domains, needed)
        viable = [d for d in ordered if d.pods_fitting >= lead_pods]
        attempts = 0
        for dom in viable[: self.search_bound]:
            attempts += 1
            pods, _ = self._attempt(plan, dom, False, plan.demands)
            if pods is not None:
                return PlacementOutcome(pods, attempts)
        kind = "device attribute" if topo.device_attribute else "node label"
        best = min(ordered, key=lambda d: (-d.pods_fitting, d.value), default=None)
        summary = (
            f"needs {needed} pods in one domain of {kind} {topo.key}; "
            + (
                f"best domain {topo.key}={best.value} has room for {best.pods_fitting}"
                if best is not None
                else "no eligible node or device has that key"
            )
            + (
                f" (tried {attempts} of {len(viable)} domains with room for pod set "
                f"{plan.demands[0].pod_set.name}, search bound {self.search_bound})"
                if viable
                else f" (none of {len(ordered)} domains has room for pod set "
                f"{plan.demands[0].pod_set.name})"
            )
        )
        if topo.mode is TopologyMode.PREFERRED:
            return self._search_unconstrained(plan, attempts, summary)
        return PlacementOutcome(None, attempts, summary)

    # ---- search ----------------------------------------------------------------------
    def _search_unconstrained(
        self, plan: GangPlan, used: int, prefix: str | None
    ) -> PlacementOutcome:
        variants: list[tuple[bool, list[PodDemand]]] = [
            (False, plan.demands),
            (True, plan.demands),
            (False, list(reversed(plan.demands))),
        ]
        if len(plan.demands) == 1:
            variants.pop()
        attempts = used
        first: _Failure | None = None
        for descending, demands in variants:
            if attempts >= self.search_bound and attempts > used:
                break
            attempts += 1
            pods, fail = self._attempt(plan, None, descending, demands)
            if pods is not None:
                return PlacementOutcome(pods, attempts)
            first = first or fail
        reason = first.text() if first is not None else "search bound reached"
        if attempts > 1:
            reason += f" (tried {attempts} placements, search bound {self.search_bound})"
        if prefix:
            reason = f"{prefix}; anywhere: {reason}"
        return PlacementOutcome(None, attempts, reason)

    def _attempt(
        self, plan: GangPlan, domain: Domain | None, descending: bool, demands: list[PodDemand]
    ) -> tuple[tuple[PodPlacement, ...] | None, _Failure | None]:
        state = self.state
        uid = plan.gang.uid
        device_ok = domain.device_filter if domain and domain.device_filter else _any_device
        placed: list[PodPlacement] = []
        for demand in demands:
            ps = demand.pod_set
            eligible = state.eligible_nodes(ps.node_selector, ps.tolerations)
            if domain is not None:
                eligible = eligible & domain.nodes
            for index in range(ps.count):
                pod = self._place_pod(demand, index, eligible, descending, device_ok)
                if pod is None:
                    for p in reversed(placed):
                        state.release_pod(uid, p)
                    return None, _Failure(demand, index, ps.count, domain)
                state.apply_pod(uid, pod)
                placed.append(pod)
        return tuple(placed), None

    def _place_pod(
        self,
        demand: PodDemand,
        index: int,
        eligible: frozenset[str],
        descending: bool,
        device_ok: DeviceFilter,
    ) -> PodPlacement | None:
        state = self.state
        ps = demand.pod_set
        if descending:
            candidates: Iterator[str] = demand.candidates(state, eligible, True)
        else:
            candidates = iter(self._active.node_candidates(state, demand, eligible))
        for node in candidates:
            if not state.nodes[node].fits(demand.requests):
                continue
            claims: tuple[ClaimAllocation, ...] = ()
            if ps.claims:
                found = allocate_claims(state.inventory, node, ps.claims, device_ok)
                if found is None:
                    continue
                claims = found
            return PodPlacement(ps.name, index, node, demand.requests, claims)
        return None

    # ---- cheap necessary conditions and domains --------------------------------------
    def _precheck(self, plan: GangPlan) -> str | None:
        """A fast 'cannot fit' from free-device counts, before any search."""
        inv = self.state.inventory
        per_key: dict[MatchKey, int] = {}
        for demand in plan.demands:
            ps = demand.pod_set
            for claim in ps.claims:
                for req in claim.spec.requests:
                    if all(inv.match_set(match_key(s)).class_missing for s in req.alternatives):
                        missing = ", ".join(sorted({s.device_class for s in req.alternatives}))
                        return f"pod set {ps.name}: DeviceClass {missing} does not exist"
            if demand.primary is None:
                continue
            mk, per_pod = demand.primary
            ms = inv.match_set(mk)
            per_key[mk] = per_key.get(mk, 0) + per_pod * ps.count
            fitting = ms.pods_fitting(per_pod)
            if fitting < ps.count:
                return (
                    f"pod set {ps.name} needs {ps.count} pods x {per_pod} {mk[0]} devices; "
                    f"free devices can host only {fitting} such pods"
                )
        for mk, need in per_key.items():
            ms = inv.match_set(mk)
            free = ms.total_free()
            if not ms.shareable and free < need:
                return f"needs {need} {device_quota_resource(mk[0])}; {free} free"
        return None

    def _domains(self, plan: GangPlan, topo: Topology) -> list[Domain]:
        state = self.state
        eligible: frozenset[str] = frozenset()
        for d in plan.demands:
            eligible |= state.eligible_nodes(d.pod_set.node_selector, d.pod_set.tolerations)
        lead = plan.demands[0]
        out = []
        if not topo.device_attribute:
            for v, members in state.label_domains(topo.key).items():
                nodes = members & eligible
                if nodes:
                    fitting, whole_nodes, whole_pods = self._pods_fitting(lead, nodes, None)
                    out.append(Domain(v, nodes, fitting, None, whole_nodes, whole_pods))
            return out
        inv = state.inventory
        for v, by_node in inv.attribute_domains(topo.key).items():
            nodes = frozenset(by_node) & eligible
            if not nodes:
                continue
            partial = {n: by_node[n] for n in nodes if len(by_node[n]) != inv.node_device_count(n)}
            allowed = frozenset(dk for devs in by_node.values() for dk in devs)
            fitting, whole_nodes, whole_pods = self._pods_fitting(lead, nodes, partial)
            out.append(Domain(v, nodes, fitting, allowed.__contains__, whole_nodes, whole_pods))
        return out

    def _pods_fitting(
        self, demand: PodDemand, nodes: frozenset[str], partial: dict[str, list[DeviceKey]] | None
    ) -> tuple[int, int, int]:
        """How many pods of `demand` the domain's free primary devices (or cpu) could host,
        and how many of its nodes are whole (everything free) and how many pods they host.

        `partial` lists, for nodes only some of whose devices are in the domain, which
        ones are; other nodes count all their free matching devices.
        """
        state = self.state
        total = whole_nodes = whole_pods = 0
        if demand.primary is None:
            cpu = max(1, demand.requests.get("cpu", 0))
            for n in nodes:
                usage = state.nodes[n]
                pods = max(0, usage.free("cpu")) // cpu
                total += pods
                if usage.free("cpu") == usage.node.allocatable.get("cpu", 0):
                    whole_nodes += 1
                    whole_pods += pods
            return total, whole_nodes, whole_pods
        mk, per_pod = demand.primary
        inv = state.inventory
        ms = inv.match_set(mk)
        free = ms.free
        for n in nodes:
            if partial and n in partial:
                members = set(ms.by_node.get(n, ()))
                mine = [dk for dk in partial[n] if dk in members]
                count = sum(1 for dk in mine if inv.is_free(dk))
                size = len(mine)
            else:
                count = free.get(n, 0)
                size = len(ms.by_node.get(n, ()))
            total += count // per_pod
            if count and count == size:
                whole_nodes += 1
                whole_pods += count // per_pod
        return total, whole_nodes, whole_pods


def reservation_charge(pods: tuple[PodPlacement, ...]) -> dict[str, int]:
    """The quota a set of pods uses: their requests plus one `devices/<class>` per device."""
    charge: dict[str, int] = {}
    for pod in pods:
        for r, v in pod.requests.items():
            charge[r] = charge.get(r, 0) + v
        for claim in pod.claims:
            for da in claim.devices:
                key = device_quota_resource(da.device_class)
                charge[key] = charge.get(key, 0) + 1
    return charge
