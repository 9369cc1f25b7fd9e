"""Per-queue policy choice: a Queue may name its own ordering, preemption or placement.

The cluster-wide ordering interleaves queues; a queue with its own ordering policy fills
the turns the cluster-wide order gives it with its own gangs in its own order (so a
strict-FIFO queue stops taking turns once its head does not fit). Preemption and
placement simply use the gang's queue's policy, or the cluster-wide one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from controller.engine.context import CycleContext
from controller.engine.model import Gang, Topology
from controller.engine.placement import Domain, PodDemand
from controller.engine.policy import (
    OrderingPolicy,
    PlacementPolicy,
    PreemptionPolicy,
    help_key,
)
from controller.engine.state import ClusterState
from policies.registry import (
    KINDS,
    PolicyRef,
    UnknownPolicy,
    create,
    create_ordering,
    create_placement,
    create_preemption,
)


@dataclass(frozen=True)
class PolicySelection:
    """The three policy choices of one scope (cluster-wide or one queue); None = inherit."""

    ordering: PolicyRef | None = None
    preemption: PolicyRef | None = None
    placement: PolicyRef | None = None

    @staticmethod
    def parse(value: object, where: str) -> PolicySelection:
        """Accept `{ordering: "drf", placement: {name: spread, params: {...}}}` (any subset)."""
        if value is None:
            return PolicySelection()
        if not isinstance(value, Mapping):
            raise UnknownPolicy(
                where, f"expected a map of ordering/preemption/placement, got {value!r}"
            )
        extra = sorted(str(k) for k in value if k not in KINDS)
        if extra:
            raise UnknownPolicy(
                where, f"unknown policy kind {', '.join(extra)}; use {', '.join(KINDS)}"
            )
        refs = {
            k: PolicyRef.parse(value[k], f"{where}.{k}") for k in KINDS if value.get(k) is not None
        }
        return PolicySelection(**refs)

    def problems(self, where: str) -> list[str]:
        """One line per choice that names no policy or has bad parameters (all are tried)."""
        out = []
        for kind in KINDS:
            ref = getattr(self, kind)
            if ref is not None:
                try:
                    create(kind, ref, f"{where}.{kind}" if where else kind)
                except UnknownPolicy as exc:
                    out.append(str(exc))
        return out


DEFAULTS = PolicySelection(PolicyRef("priority"), PolicyRef("none"), PolicyRef("bin-pack"))


@dataclass
class PerQueueOrdering:
    """The cluster-wide order, with overriding queues' turns filled from their own order.

    A turn is a slot the cluster-wide order yields for one of the queue's gangs. When a
    gang is admitted in another gang's turn, its own slot never comes (the cluster-wide
    order skips what is no longer pending), so the queue is owed that turn; owed turns
    are taken after the cluster-wide order ends, by queue name.
    """

    default: OrderingPolicy
    queues: Mapping[str, OrderingPolicy]
    name: str = "per-queue"
    _turns: dict[str, Gang | None] = field(default_factory=dict)
    _slots_seen: set[str] = field(default_factory=set)
    _owed: dict[str, int] = field(default_factory=dict)

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[Gang]:
        if queue is not None:
            yield from self.queues.get(queue, self.default).order(ctx, queue)
            return
        own: dict[str, Iterator[Gang]] = {}
        self._turns.clear()
        self._slots_seen.clear()
        self._owed.clear()

        def draw(q: str) -> Gang | None:
            it = own.get(q)
            if it is None:
                it = own[q] = iter(self.queues[q].order(ctx, q))
            return next(it, None)

        for slot in self.default.order(ctx):
            if slot.queue not in self.queues:
                yield slot
                continue
            self._slots_seen.add(slot.uid)
            gang = draw(slot.queue)
            if gang is not None:
                self._turns[gang.uid] = slot
                yield gang
        for q in sorted(self._owed):
            while self._owed[q] > 0:
                self._owed[q] -= 1
                gang = draw(q)
                if gang is None:
                    break
                self._turns[gang.uid] = None
                yield gang

    def observe(self, gang: Gang, admitted: bool) -> None:
        if gang.uid not in self._turns:
            self.default.observe(gang, admitted)
            return
        slot = self._turns.pop(gang.uid)
        self.queues[gang.queue].observe(gang, admitted)
        if slot is None:
            return
        self.default.observe(slot, admitted)
        if admitted and gang.uid not in self._slots_seen:
            self._owed[gang.queue] = self._owed.get(gang.queue, 0) + 1


@dataclass
class PerQueuePreemption:
    """The gang's queue's preemption policy, or the cluster-wide one."""

    default: PreemptionPolicy
    queues: Mapping[str, PreemptionPolicy]
    name: str = "per-queue"

    @property
    def help_key(self) -> Callable[[Gang], Hashable] | None:
        """The queue's policy's key, when every policy it routes to has one (a class of
        alike gangs is always within one queue)."""
        policies = (self.default, *self.queues.values())
        if any(help_key(p) is None for p in policies):
            return None
        return self._help_key

    def _help_key(self, gang: Gang) -> Hashable:
        key = help_key(self._for(gang))
        assert key is not None
        return key(gang)

    def _for(self, gang: Gang) -> PreemptionPolicy:
        return self.queues.get(gang.queue, self.default)

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return self._for(gang).could_help(state, gang)

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        return self._for(gang).victims(ctx, gang, reason)

    def retry_at(self, state: ClusterState, gang: Gang) -> float | None:
        """The queue's policy's optional hook: when a refused preemption may succeed."""
        retry = getattr(self._for(gang), "retry_at", None)
        return retry(state, gang) if retry is not None else None


@dataclass
class PerQueuePlacement:
    """The gang's queue's placement policy, or the cluster-wide one."""

    default: PlacementPolicy
    queues: Mapping[str, PlacementPolicy]
    name: str = "per-queue"

    def for_gang(self, gang: Gang) -> PlacementPolicy:
        return self.queues.get(gang.queue, self.default).for_gang(gang)

    def topology(self, gang: Gang) -> Topology | None:
        return self.for_gang(gang).topology(gang)

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterable[str]:
        return self.default.node_candidates(state, demand, eligible)

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        return self.for_gang(gang).order_domains(gang, domains, pods_needed)


@dataclass
class EnginePolicies:
    """What an Engine is built with."""

    ordering: OrderingPolicy
    preemption: PreemptionPolicy
    placement: PlacementPolicy


def build(
    cluster: PolicySelection,
    queues: Mapping[str, PolicySelection] | None = None,
    where: str = "",
) -> EnginePolicies:
    """Instantiate the cluster-wide policies and each queue's overrides (by name).

    Cluster-wide choices left None take `DEFAULTS`; errors name the choice at fault,
    prefixed by `where` (e.g. `settings`) or by the queue.
    """
    queues = queues or {}
    at = f"{where}." if where else ""
    ordering = create_ordering(cluster.ordering or DEFAULTS.ordering or "priority", f"{at}ordering")
    preemption = create_preemption(
        cluster.preemption or DEFAULTS.preemption or "none", f"{at}preemption"
    )
    placement = create_placement(
        cluster.placement or DEFAULTS.placement or "bin-pack", f"{at}placement"
    )
    own_order = {
        q: create_ordering(s.ordering, f"queue {q}: policies.ordering")
        for q, s in sorted(queues.items())
        if s.ordering is not None
    }
    own_preempt = {
        q: create_preemption(s.preemption, f"queue {q}: policies.preemption")
        for q, s in sorted(queues.items())
        if s.preemption is not None
    }
    own_place = {
        q: create_placement(s.placement, f"queue {q}: policies.placement")
        for q, s in sorted(queues.items())
        if s.placement is not None
    }
    return EnginePolicies(
        PerQueueOrdering(ordering, own_order) if own_order else ordering,
        PerQueuePreemption(preemption, own_preempt) if own_preempt else preemption,
        PerQueuePlacement(placement, own_place) if own_place else placement,
    )
