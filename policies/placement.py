"""Placement policies: which nodes, devices and topology domains a gang gets.

The engine's Placer asks a policy for nodes per pod (best first) and, for a gang under a
topology constraint, for the domains (or unions of domains) to try in order; it checks
every candidate fully, so a policy only orders and never has to be exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from controller.engine.devices import MatchKey, MatchSet
from controller.engine.errors import InvalidInput
from controller.engine.model import DeviceKey, Gang, Topology, TopologyMode
from controller.engine.placement import DeviceFilter, Domain, GangPlan, PodDemand
from controller.engine.policy import BinPack, PlacementPolicy
from controller.engine.state import ClusterState
from policies.registry import builtin

MAX_UNIONS = 3
"""Unions a preferred topology offers (spanning k, k+1, k+2 domains) before 'anywhere'."""


def _tightest_first(domains: Iterable[Domain], need: int) -> list[Domain]:
    """Domains with room for `need` pods, fewest pods fitting first; then the rest, most
    room first (they may still fit a gang whose other pod sets need no primary device)."""
    ds = list(domains)
    fitting = sorted((d for d in ds if d.pods_fitting >= need), key=Domain.rank)
    short = sorted(
        (d for d in ds if d.pods_fitting < need), key=lambda d: (-d.pods_fitting, d.value)
    )
    return fitting + short


@builtin
@dataclass
class BinPackPolicy(BinPack):
    """Most allocated first: each pod goes to the eligible node with the fewest free devices
    of its primary request (or least free cpu without one) that still fit; domains: the
    tightest one with room, then the others with most room first. The gang's own topology
    applies; there is no policy default."""

    name = "bin-pack"


@builtin
@dataclass
class Spread(BinPack):
    """Least allocated first: each pod goes to the eligible node with the most free devices
    of its primary request (or most free cpu), so a gang's pods land on different nodes
    while nodes are equally free; domains with most room first. The gang's own topology
    applies; there is no policy default."""

    name = "spread"
    node_order_is_local = True
    """Nodes by their own free devices (or cpu), most first, then name."""

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterator[str]:
        return demand.candidates(state, eligible, descending=True)

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        return sorted(domains, key=lambda d: (-d.pods_fitting, d.value))


@builtin
@dataclass
class TopologyPacking:
    """A gang in as few domains as possible. Its own topology wins; otherwise `key` (a node
    label, or a device attribute with `device_attribute`) with `mode` applies, or none.
    Single domains with room first, tightest fit first (big domains stay for big gangs);
    if preferred, then unions of 2, 3.. domains picked largest first (the last member the
    smallest that completes the room), then anywhere. Nodes in a domain: bin-pack."""

    name = "topology"
    node_order_is_local = True
    """Nodes by their own free devices (or cpu), then name."""
    key: str | None = None
    mode: Literal["preferred", "required"] = "preferred"
    device_attribute: bool = False
    _default: Topology | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.key is None:
            if self.device_attribute:
                raise InvalidInput("topology.device_attribute", "needs a key to name")
            return
        self._default = Topology(self.key, TopologyMode(self.mode), self.device_attribute)

    def for_gang(self, gang: Gang) -> PlacementPolicy:
        return self

    def topology(self, gang: Gang) -> Topology | None:
        return gang.topology or self._default

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterator[str]:
        return demand.candidates(state, eligible, descending=False)

    def retry_candidates(
        self, state: ClusterState, gang: Gang, demand: PodDemand, eligible: frozenset[str]
    ) -> list[str]:
        """The engine's second try, still in as few domains as possible: whole domains
        in turn, the roomiest first, each in bin-pack order (without a topology: most
        free nodes first, as the engine's default)."""
        topo = self.topology(gang)
        if topo is None:
            return list(demand.candidates(state, eligible, descending=True))
        domain_of = _node_domains(state, topo)
        nodes = list(self.node_candidates(state, demand, eligible))
        room: dict[str, int] = {}
        for n in nodes:
            d = domain_of.get(n, "")
            room[d] = room.get(d, 0) + _free_for(state, demand, n)
        rank = {d: i for i, d in enumerate(sorted(room, key=lambda d: (d == "", -room[d], d)))}
        return sorted(nodes, key=lambda n: rank[domain_of.get(n, "")])

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        need = _lead_pods(gang)
        singles = _tightest_first(domains, need)
        topo = self.topology(gang)
        if topo is None or topo.mode is TopologyMode.REQUIRED:
            return singles
        return singles + _unions(domains, need, MAX_UNIONS)


def _node_domains(state: ClusterState, topo: Topology) -> dict[str, str]:
    """Each node's topology domain: its label value, or the attribute value most of its
    devices have."""
    if not topo.device_attribute:
        return {v: value for value, nodes in state.label_domains(topo.key).items() for v in nodes}
    best: dict[str, tuple[int, str]] = {}
    for value, by_node in state.inventory.attribute_domains(topo.key).items():
        for n, devices in by_node.items():
            if n not in best or (-len(devices), value) < (-best[n][0], best[n][1]):
                best[n] = (len(devices), value)
    return {n: value for n, (_, value) in best.items()}


def _free_for(state: ClusterState, demand: PodDemand, node: str) -> int:
    """Free devices of the demand's primary request on `node` (free cpu without one)."""
    if demand.primary is not None:
        return state.inventory.match_set(demand.primary[0]).free.get(node, 0)
    return state.nodes[node].free("cpu")


def _unions(domains: list[Domain], need: int, limit: int) -> list[Domain]:
    """Up to `limit` unions of the fewest domains whose room adds up to `need`: for k
    members, the k-1 largest plus the smallest remaining one that completes the room."""
    by_room = sorted(
        (d for d in domains if d.pods_fitting > 0), key=lambda d: (-d.pods_fitting, d.value)
    )
    out: list[Domain] = []
    head_room = 0
    for k in range(2, len(by_room) + 1):
        head_room += by_room[k - 2].pods_fitting
        rest = by_room[k - 1 :]
        if head_room + rest[0].pods_fitting < need:
            continue
        last = min((d for d in rest if head_room + d.pods_fitting >= need), key=Domain.rank)
        out.append(_union([*by_room[: k - 1], last]))
        if len(out) == limit:
            break
    return out


def _union(members: list[Domain]) -> Domain:
    """One domain made of several: their nodes, their room, any of their devices."""
    filters = [d.device_filter for d in members if d.device_filter is not None]
    return Domain(
        "+".join(sorted(d.value for d in members)),
        frozenset().union(*(d.nodes for d in members)),
        sum(d.pods_fitting for d in members),
        _any_of(filters) if filters else None,
    )


def _any_of(filters: list[DeviceFilter]) -> DeviceFilter:
    def allowed(dk: DeviceKey) -> bool:
        return any(f(dk) for f in filters)

    return allowed


def _breaks(d: Domain, need: int) -> int:
    """Whole nodes a gang of `need` pods breaks in `d`: none while partly used nodes have
    room, else as many as the rest takes at the domain's pods per whole node."""
    partly = d.pods_fitting - d.whole_pods
    if partly >= need or not d.whole_pods:
        return 0
    return -(-(need - partly) * d.whole_nodes // d.whole_pods)


def _lead_pods(gang: Gang) -> int:
    """Pods of the gang's lead pod set (largest device request): Domain.pods_fitting
    counts those, so it is the number a domain must have room for."""
    return GangPlan.of(gang, 0).demands[0].pod_set.count


@builtin
@dataclass
class FragmentationAware:
    """Keeps whole nodes (every matching device free; cpu: all cpu free) for large gangs.
    Each pod goes to a partly used node where its primary device request (or cpu) fits
    most tightly; a whole node only when no partly used node fits, the smallest first.
    Unlike bin-pack, which ranks by free count alone and so breaks an empty 8-GPU node
    before touching a 16-GPU node with 10 free, it never breaks a whole node it can avoid.
    Domains: those breaking fewest whole nodes first (partly used ones), then tightest."""

    name = "fragmentation-aware"
    node_order_is_local = True
    """Nodes by whether they are whole, then their own free devices (or cpu), then name
    (a node is whole by its own state; the largest node size does not depend on use)."""
    _largest: dict[MatchKey, tuple[MatchSet, int, int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _largest_cpu: tuple[ClusterState | None, int, int] = field(
        default=(None, -1, 0), init=False, repr=False, compare=False
    )

    def for_gang(self, gang: Gang) -> PlacementPolicy:
        return self

    def topology(self, gang: Gang) -> Topology | None:
        return gang.topology

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        need = _lead_pods(gang)
        fitting = sorted(
            (d for d in domains if d.pods_fitting >= need),
            key=lambda d: (_breaks(d, need), d.pods_fitting, d.value),
        )
        short = sorted(
            (d for d in domains if d.pods_fitting < need), key=lambda d: (-d.pods_fitting, d.value)
        )
        return fitting + short

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterator[str]:
        if demand.primary is not None:
            ms = state.inventory.match_set(demand.primary[0])
            if not ms.free.get(None, 0):
                return self._by_devices(state, ms, demand.primary[1], eligible)
        return self._by_cpu(state, demand.requests.get("cpu", 0), eligible)

    def retry_candidates(
        self, state: ClusterState, gang: Gang, demand: PodDemand, eligible: frozenset[str]
    ) -> list[str]:
        """The engine's second try, still keeping whole nodes: partly used nodes most
        free first (the other end from the first try), then whole nodes smallest first."""
        nodes = list(self.node_candidates(state, demand, eligible))
        whole = [n for n in nodes if self._is_whole(state, demand, n)]
        kept = set(whole)
        partly = [n for n in nodes if n not in kept]
        partly.sort(key=lambda n: -_free_for(state, demand, n))
        return partly + whole

    @staticmethod
    def _is_whole(state: ClusterState, demand: PodDemand, node: str) -> bool:
        if demand.primary is not None:
            ms = state.inventory.match_set(demand.primary[0])
            if not ms.free.get(None, 0):
                return ms.free.get(node, 0) == len(ms.by_node.get(node, ()))
        usage = state.nodes[node]
        return usage.free("cpu") == usage.node.allocatable.get("cpu", 0)

    def _by_devices(
        self, state: ClusterState, ms: MatchSet, per_pod: int, eligible: frozenset[str]
    ) -> Iterator[str]:
        # Free-device buckets ascending; a node is whole when its free count equals its
        # matching devices. Buckets at or above the largest node size hold only whole
        # nodes, so a cluster of equal nodes is walked lazily, without a scan.
        largest = self._largest_node(state, ms)
        levels = sorted(k for k in ms.buckets if k >= per_pod)
        whole: list[str] = []
        for k in levels:
            if k >= largest:
                break
            for n in ms.buckets[k]:
                if n in eligible:
                    if len(ms.by_node[n]) == k:
                        whole.append(n)
                    else:
                        yield n
        yield from whole
        for k in levels:
            if k >= largest:
                yield from (n for n in ms.buckets[k] if n in eligible)

    def _by_cpu(self, state: ClusterState, cpu: int, eligible: frozenset[str]) -> Iterator[str]:
        largest = self._largest_cpu_node(state)
        whole: list[str] = []
        tail: Iterator[str] = iter(())
        nodes = state.nodes_by_free_cpu(cpu)
        for n in nodes:
            usage = state.nodes[n]
            free = usage.free("cpu")
            if free >= largest:  # from here on every node is whole
                tail = nodes
                if n in eligible:
                    whole.append(n)
                break
            if n not in eligible:
                continue
            if free == usage.node.allocatable.get("cpu", 0):
                whole.append(n)
            else:
                yield n
        yield from whole
        yield from (n for n in tail if n in eligible)

    def _largest_node(self, state: ClusterState, ms: MatchSet) -> int:
        """Most matching devices on one node (cached per inventory generation)."""
        gen = state.inventory.generation
        hit = self._largest.get(ms.key)
        if hit is None or hit[0] is not ms or hit[1] != gen:
            size = max((len(v) for n, v in ms.by_node.items() if n is not None), default=0)
            hit = self._largest[ms.key] = (ms, gen, size)
        return hit[2]

    def _largest_cpu_node(self, state: ClusterState) -> int:
        """Most allocatable cpu of one node (cached per capacity epoch: any node change)."""
        cached, epoch, size = self._largest_cpu
        if cached is not state or epoch != state.capacity_epoch:
            size = max((u.node.allocatable.get("cpu", 0) for u in state.nodes.values()), default=0)
            self._largest_cpu = (state, state.capacity_epoch, size)
        return size
