"""Gang placement: every pod gets a node and every claim its devices, or nothing is held.

A placement attempt applies pods to the state one by one (so later pods see what earlier
ones took) and undoes them all if any pod finds no room. When the first greedy pass
fails, a bounded search tries other passes (the policy's retry order, other pod-set
orders, other topology domains) and finally a backtracking search over every pod's node
and devices, and reports how far it went. Devices come from `allocation.DeviceSearch`,
within the queue's device quota. A failure explains itself in terms a user can act on.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass

from controller.engine.allocation import DeviceFilter, DeviceSearch, is_simple, match_key
from controller.engine.devices import DeviceInventory, MatchKey, MatchSet
from controller.engine.model import (
    AllocationMode,
    DeviceKey,
    Gang,
    PodClaim,
    PodSet,
    Topology,
    TopologyMode,
    device_quota_resource,
)
from controller.engine.policy import PlacementPolicy, node_order_is_local
from controller.engine.quantity import format_canonical
from controller.engine.quota import QuotaTree
from controller.engine.reservation import ClaimAllocation, PodPlacement
from controller.engine.state import ClusterState

__all__ = ["DeviceFilter", "match_key"]

_MADE_DOMAINS_KEPT = 1 << 14
"""Domains a placer keeps for reuse; dropped wholesale when full (cheap to redo)."""
GANG_SEARCH_STEPS = 512
"""Bound on (pod, node, allocation) choices of the exhaustive gang search."""
VIABLE_CAP = 64
"""Viable nodes counted per pod set to order the exhaustive gang search."""
SHAREABLE_ROOM = 1 << 30
"""Pods a shareable device could serve: bounded by nothing a device count can tell."""


@dataclass(frozen=True, slots=True)
class PodDemand:
    """What one pod of a pod set needs, with the device request that drives node choice."""

    pod_set: PodSet
    requests: dict[str, int]
    primary: tuple[MatchKey, int] | None
    simple: PodClaim | None = None
    """The pod set's one claim if it is simple (`is_simple`): first fit may serve it."""

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
        simple = pod_set.claims[0] if is_simple(pod_set.claims) else None
        return PodDemand(pod_set, requests, primary, simple)

    def candidates(
        self, state: ClusterState, eligible: frozenset[str], descending: bool
    ) -> Iterator[str]:
        """Eligible nodes with room for the primary device request (or cpu), in order."""
        if self.primary is not None:
            mk, per_pod = self.primary
            ms = state.inventory.match_set(mk)
            if not ms.free.get(None, 0):
                # MatchSet.nodes_with_free, walked here (one generator less per pod)
                buckets = ms.buckets
                for k in ms.levels(per_pod, descending):
                    for n in buckets[k]:
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


DomainMembers = tuple[str, frozenset[str], dict[str, list[DeviceKey]] | None, DeviceFilter | None]
"""A topology domain's value, eligible nodes, nodes only partly in it (with the devices
that are) and device filter (None for a node-label domain)."""


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
    device_keys: tuple[MatchKey, ...] = ()
    """Every (class, selectors) the gang's claims can use."""
    device_classes: tuple[str, ...] = ()
    constrained: tuple[str, ...] = ()
    """Every attribute a matchAttribute constraint of the gang names."""

    @staticmethod
    def shape_of(gang: Gang) -> tuple[object, ...]:
        """What the gang's placement depends on of the gang itself (remembered per gang
        object: gangs are frozen, and the cycle asks again for each gang it considers)."""
        hit = _shapes.get(id(gang))
        if hit is not None and hit[0] is gang:
            return hit[1]
        shape = GangPlan._shape_of(gang)
        if len(_shapes) >= _SHAPES_KEPT:
            _shapes.clear()
        _shapes[id(gang)] = (gang, shape)
        return shape

    @staticmethod
    def _shape_of(gang: Gang) -> tuple[object, ...]:
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
        subs = [
            sub
            for ps in gang.pod_sets
            for claim in ps.claims
            for req in claim.spec.requests
            for sub in req.alternatives
        ]
        attributes = {
            c.attribute for ps in gang.pod_sets for cl in ps.claims for c in cl.spec.constraints
        }
        return GangPlan(
            gang,
            demands,
            shape_id,
            minimum_charge(gang),
            tuple(sorted({match_key(s) for s in subs})),
            tuple(sorted({s.device_class for s in subs})),
            tuple(sorted(attributes)),
        )

    def device_search(
        self, inv: DeviceInventory, domain: Domain | None, budget: Mapping[str, int] | None
    ) -> DeviceSearch:
        """A device search over the gang's keys, inside `domain`'s devices if it has any."""
        device_ok = domain.device_filter if domain is not None else None
        return DeviceSearch(inv, self.device_keys, self.constrained, device_ok, budget)


_SHAPES_KEPT = 1 << 14
"""Gangs whose shape is remembered; dropped wholesale when full (cheap to redo)."""
_shapes: dict[int, tuple[Gang, tuple[object, ...]]] = {}
"""Shapes by gang id, with the gang (held, so its id is not reused while kept)."""


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
    domain: Domain | None = None
    """The topology domain the pods were placed in (None: anywhere)."""
    domains: list[Domain] | None = None
    """The gang's topology domains as the placement found them (None: no topology)."""


@dataclass(slots=True)
class FirstPass:
    """A gang's pods as the first greedy pass of `Placer.place` put them (applied to the
    state), the pass's domain (None: anywhere) and the device budget it ran under: what
    `Placer.again` resumes."""

    gang_uid: str
    pods: tuple[PodPlacement, ...]
    domain: Domain | None
    budget: dict[str, int]
    domains: list[Domain] | None = None
    """The gang's topology domains before the pass (None: no topology)."""


@dataclass
class _Failure:
    demand: PodDemand
    placed: int
    total: int
    domain: Domain | None = None
    note: str | None = None
    """Why the failure is not proven (a search budget ran out), if so."""

    def text(self) -> str:
        ps = self.demand.pod_set.name
        where = f" in {self.domain.value}" if self.domain is not None else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"pod set {ps}: placed {self.placed} of {self.total} pods{where}, "
            f"no node has room for the next ({self.demand.describe()}){note}"
        )


class Placer:
    """Places whole gangs on a ClusterState with one placement policy and a search bound."""

    def __init__(
        self,
        state: ClusterState,
        policy: PlacementPolicy,
        search_bound: int = 8,
        domain_members: dict[Hashable, list[DomainMembers]] | None = None,
    ):
        self.state = state
        self.policy = policy
        self._active = policy
        self.search_bound = max(1, search_bound)
        self.domain_members: dict[Hashable, list[DomainMembers]] = (
            {} if domain_members is None else domain_members
        )
        """Topology domains' members by what they are computed from (`_domain_members`);
        the engine passes one table for all its cycles."""
        self._made_domains: dict[tuple[int, int, int, int], Domain] = {}
        """Domains made, by their nodes' id and room (`_domain`); each holds its nodes,
        so an id here is not reused while its entry is kept."""

    def place(self, plan: GangPlan, budget: Mapping[str, int] | None = None) -> PlacementOutcome:
        """Place every pod or none; on success the pods are applied to the state.

        `budget` maps a DeviceClass to the devices the gang may take of it (its quota
        headroom); alternatives beyond it are not chosen.
        """
        precheck = self._precheck(plan)
        if precheck is not None:
            return PlacementOutcome(None, 0, precheck)
        self._active = policy = self.policy.for_gang(plan.gang)
        topo = policy.topology(plan.gang)
        if topo is None:
            return self._search_unconstrained(plan, budget, 0, None)
        domains = self._domains(plan, topo)
        needed = sum(d.pod_set.count for d in plan.demands)
        lead_pods = plan.demands[0].pod_set.count
        ordered = policy.order_domains(plan.gang, domains, needed)
        viable = [d for d in ordered if d.pods_fitting >= lead_pods]
        attempts = 0
        notes: list[str] = []
        for exhaustive in (False, True):
            for dom in viable:
                if attempts >= self.search_bound:
                    break
                attempts += 1
                if exhaustive:
                    pods, fail = self._exhaustive(plan, dom, plan.demands, budget)
                else:
                    pods, fail = self._attempt(plan, dom, "policy", plan.demands, budget)
                if pods is not None:
                    return PlacementOutcome(pods, attempts, domain=dom, domains=domains)
                if fail is not None and fail.note and fail.note not in notes:
                    notes.append(fail.note)
        kind = "device attribute" if topo.device_attribute else "node label"
        best = min(ordered, key=lambda d: (-d.pods_fitting, d.value), default=None)
        tried = f"tried {attempts} attempts on {len(viable)} domains with room for pod set"
        summary = (
            f"needs {needed} pods in one domain of {kind} {topo.key}; "
            + (
                f"best domain {topo.key}={best.value} has room for {best.pods_fitting}"
                if best is not None
                else "no eligible node or device has that key"
            )
            + (
                f" ({tried} {plan.demands[0].pod_set.name}, search bound {self.search_bound})"
                if viable
                else f" (none of {len(ordered)} domains has room for pod set "
                f"{plan.demands[0].pod_set.name})"
            )
            + "".join(f"; {n}" for n in notes)
        )
        if topo.mode is TopologyMode.PREFERRED:
            outcome = self._search_unconstrained(plan, budget, attempts, summary)
            outcome.domains = domains
            return outcome
        return PlacementOutcome(None, attempts, summary, domains=domains)

    # ---- placing again after a small change ------------------------------------------
    def first_pass(
        self, plan: GangPlan, outcome: PlacementOutcome, budget: Mapping[str, int]
    ) -> FirstPass | None:
        """The placement `place(plan, budget)` found, as a `FirstPass` that `again` can
        resume, if it came from the first greedy pass and the gang's policy declares
        `node_order_is_local`; else None."""
        if outcome.pods is None or outcome.attempts != 1:
            return None
        if not node_order_is_local(self.policy.for_gang(plan.gang)):
            return None
        return FirstPass(plan.gang.uid, outcome.pods, outcome.domain, dict(budget), outcome.domains)

    def again(
        self,
        plan: GangPlan,
        budget: Mapping[str, int],
        kept: FirstPass,
        changed: Set[str | None],
    ) -> PlacementOutcome:
        """`place(plan, budget)`, for a gang whose pods `kept` are applied: the first
        greedy pass of a placement in a state that differs from this one (the gang's pods
        aside) only on the nodes `changed`, none of which holds a kept pod.

        The policy's node order is local, so on nodes that did not change this state's
        first pass (in the same domain) repeats that one pod for pod, until a pod set
        that a changed node could host (`_host_bound`) or a pod that could meet a device
        budget, old or new (`_budget_bound`). Those pods stay, the rest are released, and
        the pass resumes; if it fails, `place` starts over. The outcome is the one
        `place` gives; its pods are applied, or none of the gang's."""
        keep = 0
        domain: Domain | None = None
        domains: list[Domain] | None = None
        uid = plan.gang.uid
        try:
            if kept.pods:
                passes, domain, domains = self._first_domain(plan, kept, changed)
                if passes and _same_domain(domain, kept.domain):
                    keep = min(
                        len(kept.pods),
                        self._host_bound(plan, domain, changed),
                        _budget_bound(plan, kept.pods, kept.budget, budget),
                    )
        finally:  # also when a plug-in raised: then nothing is kept
            for pod in reversed(kept.pods[keep:]):
                self.state.release_pod(uid, pod)
        if keep:
            self._active = self.policy.for_gang(plan.gang)
            prefix = kept.pods[:keep]
            pods, _ = self._attempt(plan, domain, "policy", plan.demands, budget, prefix)
            if pods is not None:
                # `place`'s up-front count of free devices is a necessary condition of
                # any placement: a pass that succeeds passes it.
                return PlacementOutcome(pods, 1, domain=domain, domains=domains)
        return self.place(plan, budget)

    def _first_domain(
        self, plan: GangPlan, kept: FirstPass, changed: Set[str | None]
    ) -> tuple[bool, Domain | None, list[Domain] | None]:
        """Where `place` would make its first greedy pass if the gang's `kept` pods
        (applied) were not: (True, its domain or None for anywhere), or (False, None)
        when it would make none (a required topology with no domain room enough); and
        the domains it would order. Of `kept`'s domains, those without a node of
        `changed` are as they were (None in `changed`: all are counted again)."""
        policy = self.policy.for_gang(plan.gang)
        topo = policy.topology(plan.gang)
        if topo is None:
            return True, None, None
        held = _Held.of(self.state, kept.pods)
        before = kept.domains
        if before is None or None in changed:
            domains = self._domains(plan, topo, held)
        else:
            lead = plan.demands[0]
            members = self._domain_members(plan, topo)
            domains = []
            for old, (v, nodes, partial, allowed) in zip(before, members, strict=True):
                if nodes.isdisjoint(changed):
                    domains.append(old)
                    continue
                fitting, whole_nodes, whole_pods = self._pods_fitting(lead, nodes, partial, held)
                domains.append(self._domain(v, nodes, allowed, fitting, whole_nodes, whole_pods))
        needed = sum(d.pod_set.count for d in plan.demands)
        lead_pods = plan.demands[0].pod_set.count
        for dom in policy.order_domains(plan.gang, domains, needed):
            if dom.pods_fitting >= lead_pods:
                return True, dom, domains
        return topo.mode is TopologyMode.PREFERRED, None, domains

    def _host_bound(self, plan: GangPlan, domain: Domain | None, changed: Set[str | None]) -> int:
        """The pods before the first pod set that a node of `changed` could host now:
        eligible (in `domain`), room for its requests, and (with no network-attached
        devices to make up the rest) its primary device count free there. A pass that
        places pods elsewhere leaves those nodes as they are, so from that pod set on
        one of them might come first."""
        step = 0
        for demand in plan.demands:
            eligible = self._eligible(demand, domain)
            for node in changed:
                if node is not None and node in eligible and self._could_host(node, demand):
                    return step
            step += demand.pod_set.count
        return step

    def _could_host(self, node: str, demand: PodDemand) -> bool:
        if not self.state.nodes[node].fits(demand.requests):
            return False
        if demand.primary is None:
            return True
        mk, per_pod = demand.primary
        ms = self.state.inventory.match_set(mk)
        return ms.free.get(node, 0) >= per_pod or bool(ms.by_node.get(None))

    # ---- search ----------------------------------------------------------------------
    def _search_unconstrained(
        self, plan: GangPlan, budget: Mapping[str, int] | None, used: int, prefix: str | None
    ) -> PlacementOutcome:
        """Greedy passes (the policy's order, its retry order, pod sets reversed), then an
        exhaustive search, each counting against the search bound."""
        variants: list[tuple[str, list[PodDemand]]] = [
            ("policy", plan.demands),
            ("retry", plan.demands),
            ("policy", list(reversed(plan.demands))),
            ("exhaustive", plan.demands),
        ]
        if len(plan.demands) == 1:
            del variants[2]
        attempts = used
        first: _Failure | None = None
        note: str | None = None
        for order, demands in variants:
            if attempts >= self.search_bound and attempts > used:
                break
            attempts += 1
            if order == "exhaustive":
                pods, fail = self._exhaustive(plan, None, demands, budget)
            else:
                pods, fail = self._attempt(plan, None, order, demands, budget)
            if pods is not None:
                return PlacementOutcome(pods, attempts)
            first = first or fail
            if fail is not None and fail.note:
                note = fail.note
        reason = first.text() if first is not None else "search bound reached"
        if note and (first is None or first.note != note):
            reason += f"; {note}"
        if attempts > 1:
            reason += f" (tried {attempts} placements, search bound {self.search_bound})"
        if prefix:
            reason = f"{prefix}; anywhere: {reason}"
        return PlacementOutcome(None, attempts, reason)

    def _eligible(self, demand: PodDemand, domain: Domain | None) -> frozenset[str]:
        ps = demand.pod_set
        eligible = self.state.eligible_nodes(ps.node_selector, ps.tolerations)
        return eligible & domain.nodes if domain is not None else eligible

    def _attempt(
        self,
        plan: GangPlan,
        domain: Domain | None,
        order: str,
        demands: list[PodDemand],
        budget: Mapping[str, int] | None,
        prefix: tuple[PodPlacement, ...] = (),
    ) -> tuple[tuple[PodPlacement, ...] | None, _Failure | None]:
        """One greedy pass: each pod on the first node (in `order`) that can host it.
        The pass's first pods are `prefix` (applied already, released with the rest if
        the pass fails)."""
        state = self.state
        uid = plan.gang.uid
        search = plan.device_search(state.inventory, domain, budget)
        placed: list[PodPlacement] = list(prefix)
        for kept in prefix:
            search.charge(kept.claims, -1)
        skip = len(prefix)
        try:
            for demand in demands:
                ps = demand.pod_set
                if skip >= ps.count:
                    skip -= ps.count
                    continue
                eligible = self._eligible(demand, domain)
                for index in range(skip, ps.count):
                    pod = self._place_pod(plan.gang, demand, index, eligible, order, search)
                    if pod is None:
                        for p in reversed(placed):
                            state.release_pod(uid, p)
                        return None, _Failure(demand, index, ps.count, domain, search.exhausted)
                    state.apply_pod(uid, pod)
                    search.charge(pod.claims, -1)
                    placed.append(pod)
                skip = 0
        except BaseException:
            # A plug-in fault or a selector error mid-way: leave nothing of this attempt.
            for p in reversed(placed):
                state.release_pod(uid, p)
            raise
        return tuple(placed), None

    def _place_pod(
        self,
        gang: Gang,
        demand: PodDemand,
        index: int,
        eligible: frozenset[str],
        order: str,
        search: DeviceSearch,
    ) -> PodPlacement | None:
        usage = self.state.nodes
        ps = demand.pod_set
        requests = demand.requests
        simple = demand.simple if search.first_fit_ok else None
        for node in self._candidates(gang, demand, eligible, order):
            if not usage[node].fits(requests):
                continue
            claims: tuple[ClaimAllocation, ...] = ()
            if simple is not None:
                found = search.first_fit(node, simple)
                if found is None:
                    continue
                claims = found
            elif ps.claims:
                found = search.allocate(node, ps.claims)
                if found is None:
                    continue
                claims = found
            return PodPlacement(ps.name, index, node, requests, claims)
        return None

    def _candidates(
        self, gang: Gang, demand: PodDemand, eligible: frozenset[str], order: str
    ) -> Iterable[str]:
        """Nodes in the policy's order, or in its retry order: the policy's own
        `retry_candidates` if it has one, else most free first."""
        policy = self._active
        if order == "retry":
            retry = getattr(policy, "retry_candidates", None)
            if retry is not None:
                nodes: Iterable[str] = retry(self.state, gang, demand, eligible)
                return nodes
            return demand.candidates(self.state, eligible, True)
        return policy.node_candidates(self.state, demand, eligible)

    def _exhaustive(
        self,
        plan: GangPlan,
        domain: Domain | None,
        demands: list[PodDemand],
        budget: Mapping[str, int] | None,
    ) -> tuple[tuple[PodPlacement, ...] | None, _Failure | None]:
        """Backtracking over every pod's node and devices (up to interchangeable devices,
        and with the pods of a pod set on nodes in non-decreasing order, since they are
        alike), nodes in the policy's order; bounded by GANG_SEARCH_STEPS."""
        state = self.state
        uid = plan.gang.uid
        search = plan.device_search(state.inventory, domain, budget)
        orders: dict[str, list[str]] = {}
        for d in demands:
            eligible = self._eligible(d, domain)
            first = [n for n in self._active.node_candidates(state, d, eligible)]
            seen = set(first)
            orders[d.pod_set.name] = first + sorted(n for n in eligible if n not in seen)
        rank = {
            d.pod_set.name: self._viable_nodes(d, orders[d.pod_set.name], search) for d in demands
        }
        first_fail = sorted(demands, key=lambda d: rank[d.pod_set.name])
        pods = [(d, i) for d in first_fail for i in range(d.pod_set.count)]
        placed: list[PodPlacement] = []
        steps = [GANG_SEARCH_STEPS]
        deepest = [0]

        def solve(k: int, start: int) -> bool:
            if k == len(pods):
                return True
            deepest[0] = max(deepest[0], k)
            demand, index = pods[k]
            ps = demand.pod_set
            order = orders[ps.name]
            for pos in range(start, len(order)):
                node = order[pos]
                if not state.nodes[node].fits(demand.requests):
                    continue
                for claims in search.allocations(node, ps.claims):
                    steps[0] -= 1
                    if steps[0] < 0:
                        return False
                    pod = PodPlacement(ps.name, index, node, demand.requests, claims)
                    state.apply_pod(uid, pod)
                    search.charge(claims, -1)
                    placed.append(pod)
                    nxt = pos if k + 1 < len(pods) and pods[k + 1][0] is demand else 0
                    if solve(k + 1, nxt):
                        return True
                    placed.pop()
                    search.charge(claims, +1)
                    state.release_pod(uid, pod)
                    if steps[0] < 0:
                        return False
            return False

        try:
            found = solve(0, 0)
        except BaseException:
            for p in reversed(placed):
                state.release_pod(uid, p)
            raise
        if found:
            position = {d.pod_set.name: i for i, d in enumerate(demands)}
            placed.sort(key=lambda p: (position[p.pod_set], p.index))
            return tuple(placed), None
        demand, index = pods[deepest[0]]
        note = search.exhausted
        if steps[0] < 0:
            note = f"placement search budget of {GANG_SEARCH_STEPS} steps exhausted"
        return None, _Failure(demand, index, demand.pod_set.count, domain, note)

    def _viable_nodes(self, demand: PodDemand, order: list[str], search: DeviceSearch) -> int:
        """How many nodes could take one pod of `demand` now, up to VIABLE_CAP: the gang
        search places the pod sets with the fewest first, so that a pod set only one
        node can host is not starved by the others' many equivalent choices. A node whose
        device search runs out of steps here counts as not viable and leaves no note: the
        search proper reports what it runs out on."""
        nodes = self.state.nodes
        claims = demand.pod_set.claims
        note = search.exhausted
        count = 0
        for node in order:
            if (
                nodes[node].fits(demand.requests)
                and next(search.allocations(node, claims), None) is not None
            ):
                count += 1
                if count >= VIABLE_CAP:
                    break
        search.exhausted = note
        return count

    # ---- cheap necessary conditions and domains --------------------------------------
    def _precheck(self, plan: GangPlan) -> str | None:
        """A fast 'cannot fit' from free-device counts, before any search."""
        inv = self.state.inventory
        per_key: dict[MatchKey, int] = {}
        for demand in plan.demands:
            ps = demand.pod_set
            for claim in ps.claims:
                for req in claim.spec.requests:
                    for s in req.alternatives:
                        if not inv.match_set(match_key(s)).class_missing:
                            break
                    else:
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

    def _domains(self, plan: GangPlan, topo: Topology, held: _Held | None = None) -> list[Domain]:
        """The gang's topology domains with their room now (counting what `held` holds
        as free)."""
        lead = plan.demands[0]
        out = []
        for v, nodes, partial, allowed in self._domain_members(plan, topo):
            fitting, whole_nodes, whole_pods = self._pods_fitting(lead, nodes, partial, held)
            out.append(self._domain(v, nodes, allowed, fitting, whole_nodes, whole_pods))
        return out

    def _domain(
        self,
        value: str,
        nodes: frozenset[str],
        allowed: DeviceFilter | None,
        fitting: int,
        whole_nodes: int,
        whole_pods: int,
    ) -> Domain:
        """`Domain(...)`, the one made before with the same members and room if any (a
        frozen value: the many domains whose room did not change are not built again)."""
        key = (id(nodes), fitting, whole_nodes, whole_pods)
        hit = self._made_domains.get(key)
        if (
            hit is not None
            and hit.nodes is nodes
            and hit.device_filter is allowed
            and hit.value == value
        ):
            return hit
        if len(self._made_domains) >= _MADE_DOMAINS_KEPT:
            self._made_domains.clear()
        made = self._made_domains[key] = Domain(
            value, nodes, fitting, allowed, whole_nodes, whole_pods
        )
        return made

    def _domain_members(self, plan: GangPlan, topo: Topology) -> list[DomainMembers]:
        """The domains' values, eligible nodes, partly-in nodes and devices: what changes
        only with the nodes and the devices published (kept in `domain_members` until
        either changes; free counts are read per call)."""
        state = self.state
        inv = state.inventory
        key = (
            topo.key,
            topo.device_attribute,
            inv.generation,
            state.node_generation,
            tuple(
                (tuple(sorted(d.pod_set.node_selector.items())), d.pod_set.tolerations)
                for d in plan.demands
            ),
        )
        hit = self.domain_members.get(key)
        if hit is not None:
            return hit
        eligible: frozenset[str] = frozenset()
        for d in plan.demands:
            eligible |= state.eligible_nodes(d.pod_set.node_selector, d.pod_set.tolerations)
        out: list[DomainMembers] = []
        if not topo.device_attribute:
            for v, members in state.label_domains(topo.key).items():
                nodes = members & eligible
                if nodes:
                    out.append((v, nodes, None, None))
        else:
            for v, by_node in inv.attribute_domains(topo.key).items():
                nodes = frozenset(by_node) & eligible
                if not nodes:
                    continue
                partial = {
                    n: by_node[n] for n in nodes if len(by_node[n]) != inv.node_device_count(n)
                }
                allowed = frozenset(dk for devs in by_node.values() for dk in devs)
                out.append((v, nodes, partial, allowed.__contains__))
        if len(self.domain_members) > 1024:
            self.domain_members.clear()
        self.domain_members[key] = out
        return out

    def _pods_fitting(
        self,
        demand: PodDemand,
        nodes: frozenset[str],
        partial: dict[str, list[DeviceKey]] | None,
        held: _Held | None = None,
    ) -> tuple[int, int, int]:
        """How many pods of `demand` the domain's free primary devices (or cpu) could host,
        and how many of its nodes are whole (everything free) and how many pods they host.

        `partial` lists, for nodes only some of whose devices are in the domain, which
        ones are; other nodes count all their free matching devices. What `held` holds
        counts as free.
        """
        state = self.state
        total = whole_nodes = whole_pods = 0
        if demand.primary is None:
            cpu = max(1, demand.requests.get("cpu", 0))
            more_cpu = held.cpu if held is not None else {}
            for n in nodes:
                usage = state.nodes[n]
                free_cpu = usage.free("cpu") + more_cpu.get(n, 0)
                pods = max(0, free_cpu) // cpu
                total += pods
                if free_cpu == usage.node.allocatable.get("cpu", 0):
                    whole_nodes += 1
                    whole_pods += pods
            return total, whole_nodes, whole_pods
        mk, per_pod = demand.primary
        inv = state.inventory
        ms = inv.match_set(mk)
        free = ms.free
        more: dict[str | None, int] = {}
        freed: frozenset[DeviceKey] = frozenset()
        if held is not None:
            more, freed = held.free_of(inv, ms), held.devices
        network = free.get(None, 0) + more.get(None, 0) if partial is None else 0
        rest = 0
        if not partial and not ms.shareable:
            # the loop below when every node counts all its free matching devices and
            # none is shareable (the common case), with its lookups taken out
            by_node, free_on, more_on = ms.by_node, free.get, more.get
            for n in nodes:
                count = free_on(n, 0)
                if more:
                    count += more_on(n, 0)
                if not count:
                    continue  # a full node adds nothing
                pods = count // per_pod
                if pods < SHAREABLE_ROOM:
                    rest += count - pods * per_pod
                total += pods
                if count == len(by_node.get(n, ())):
                    whole_nodes += 1
                    whole_pods += pods
            if network:
                total += (network + rest) // per_pod
            return total, whole_nodes, whole_pods
        for n in nodes:
            if partial and n in partial:
                members = set(ms.by_node.get(n, ()))
                mine = [dk for dk in partial[n] if dk in members]
                usable = [dk for dk in mine if inv.is_free(dk) or dk in freed]
                count, size = len(usable), len(mine)
                shared = sum(1 for dk in usable if inv.is_shareable(dk)) if ms.shareable else 0
            else:
                count = free.get(n, 0) + more.get(n, 0)
                size = len(ms.by_node.get(n, ()))
                shared = (
                    sum(1 for dk in ms.by_node.get(n, ()) if inv.is_shareable(dk))
                    if ms.shareable
                    else 0
                )
            pods = _pods_per_node(count, shared, per_pod)
            if shared and network:
                pods = SHAREABLE_ROOM
            rest += count - pods * per_pod if pods < SHAREABLE_ROOM and not shared else 0
            total += pods
            if count and count == size:
                whole_nodes += 1
                whole_pods += pods
        if network:
            total += (network + rest) // per_pod
        return total, whole_nodes, whole_pods


def _pods_per_node(free: int, shareable: int, per_pod: int) -> int:
    """Pods needing `per_pod` distinct devices that `free` devices, `shareable` of which
    serve any number of pods, could host (each pod uses a device at most once)."""
    if shareable >= per_pod:
        return SHAREABLE_ROOM
    if shareable:
        return (free - shareable) // (per_pod - shareable)
    return free // per_pod


@dataclass(frozen=True, slots=True)
class _Held:
    """What some applied pods of the gang being placed hold, to count as free."""

    devices: frozenset[DeviceKey]
    cpu: dict[str, int]
    _free: dict[MatchKey, dict[str | None, int]]

    @staticmethod
    def of(state: ClusterState, pods: Sequence[PodPlacement]) -> _Held:
        cpu: dict[str, int] = {}
        for pod in pods:
            cpu[pod.node] = cpu.get(pod.node, 0) + pod.requests.get("cpu", 0)
        keys = frozenset(da.device for pod in pods for c in pod.claims for da in c.devices)
        return _Held(keys, cpu, {})

    def free_of(self, inv: DeviceInventory, ms: MatchSet) -> dict[str | None, int]:
        """Per node, the devices of `ms` that would be free without these pods (the
        unshared ones: a shareable device counts as free while held)."""
        out = self._free.get(ms.key)
        if out is None:
            out = self._free[ms.key] = {}
            for dk in self.devices:
                d = inv.devices.get(dk)
                if d is not None and not d.shareable and dk in ms.by_node.get(d.node, ()):
                    out[d.node] = out.get(d.node, 0) + 1
        return out


def _same_domain(a: Domain | None, b: Domain | None) -> bool:
    """The same domain (or both anywhere): a domain's value and nodes determine its
    devices within a cycle."""
    if a is None or b is None:
        return a is b
    return (
        a.value == b.value
        and a.nodes == b.nodes
        and (a.device_filter is None) == (b.device_filter is None)
    )


def _budget_bound(
    plan: GangPlan,
    pods: Sequence[PodPlacement],
    before: Mapping[str, int],
    now: Mapping[str, int],
) -> int:
    """The pods of `pods` (a pass's first ones, in order) before the first that could
    meet a device budget, old or new: a class with less room left than the pod could
    take of it. Before that, neither budget refuses any device (a device search
    compares the room only with what it takes), so both passes choose alike."""
    if not before and not now:
        return len(pods)
    classes = before.keys() | now.keys()
    room = {c: min(before.get(c, math.inf), now.get(c, math.inf)) for c in classes}
    step = 0
    for demand in plan.demands:
        takes = _most_per_pod(demand)
        for _ in range(demand.pod_set.count):
            if step == len(pods) or any(room[c] < takes.get(c, 0) for c in classes):
                return step
            for claim in pods[step].claims:
                for da in claim.devices:
                    if da.device_class in room:
                        room[da.device_class] -= 1
            step += 1
    return step


def _most_per_pod(demand: PodDemand) -> dict[str, float]:
    """The most devices of each class one pod of the demand can take: each request's
    largest alternative of the class (All: unbounded)."""
    most: dict[str, float] = {}
    for claim in demand.pod_set.claims:
        for req in claim.spec.requests:
            largest: dict[str, float] = {}
            for sub in req.alternatives:
                n = math.inf if sub.mode is AllocationMode.ALL else sub.count
                largest[sub.device_class] = max(largest.get(sub.device_class, 0), n)
            for c, n in largest.items():
                most[c] = most.get(c, 0) + n
    return most


def device_budget(quota: QuotaTree, queue: str, plan: GangPlan) -> dict[str, int]:
    """Devices per DeviceClass the gang may take in `queue` now (quota headroom of each
    `devices/<class>` it can use; unlimited classes are left out). Placement keeps within
    it, so the exact charge check after placement holds for devices."""
    budget: dict[str, int] = {}
    for cls in plan.device_classes:
        room, _ = quota.headroom(queue, device_quota_resource(cls))
        if room is not None:
            budget[cls] = room
    return budget


def reservation_charge(pods: tuple[PodPlacement, ...]) -> dict[str, int]:
    """The quota a set of pods uses: their requests plus one `devices/<class>` per device."""
    charge: dict[str, int] = {}
    run: Mapping[str, int] | None = None
    more = 0
    for pod in pods:
        requests = pod.requests
        if requests is run:  # the same dict as the pod before: counted at the run's end
            more += 1
        else:
            if run is not None and more:
                for r, v in run.items():
                    charge[r] += v * more
            run, more = requests, 0
            for r, v in requests.items():
                charge[r] = charge.get(r, 0) + v
        for claim in pod.claims:
            devices = claim.devices
            if not devices:
                continue
            first = devices[0].device_class
            for da in devices:
                if da.device_class != first:
                    break
            else:  # one class (the usual claim): one key, counted at once
                key = device_quota_resource(first)
                charge[key] = charge.get(key, 0) + len(devices)
                continue
            for da in devices:
                key = device_quota_resource(da.device_class)
                charge[key] = charge.get(key, 0) + 1
    if run is not None and more:
        for r, v in run.items():
            charge[r] += v * more
    return charge
