"""The policy interfaces the engine calls; implementations live in `policies/`.

Built-ins here make the engine usable alone: FIFO within priority (best effort: what
does not fit is skipped), no preemption, and bin-packing placement. Policies see the
cycle through a `CycleContext`: the state, the clock, and a side-effect-free
"would this gang fit if these gangs were evicted" probe.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from controller.engine.model import Gang, Topology

if TYPE_CHECKING:
    from controller.engine.context import CycleContext
    from controller.engine.placement import Domain, PodDemand
    from controller.engine.state import ClusterState


class OrderingPolicy(Protocol):
    """Which pending gang the cycle tries next."""

    name: str

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterable[Gang]:
        """Pending gangs (of `queue`, or all) in the order to try them; may stop early
        (strict FIFO) or leave gangs out (a starvation guard holding resources)."""
        ...

    def observe(self, gang: Gang, admitted: bool) -> None:
        """Told after each attempt, before the next gang is drawn from `order`."""
        ...


class KeyedOrdering(OrderingPolicy, Protocol):
    """An ordering that is a plain sort: `order` yields the pending gangs by
    (static_key(gang), uid), never stops early or leaves gangs out, and `observe` does
    nothing for a gang that was not admitted. The engine may then walk its own index of
    alike gangs in that order instead of the whole backlog (see engine/backlog.py)."""

    def static_key(self, gang: Gang) -> tuple[Any, ...]:
        """The gang's sort key; it depends on the gang alone, never on the state or time."""
        ...


class PreemptionPolicy(Protocol):
    """Which admitted gangs to evict so that `gang` fits; always whole gangs.

    Optional, each only saves time: `help_key(gang)` (gangs `could_help` answers alike
    for, see `help_key` below), `help_stamp(state, queue)` (an object that stays the same
    while `could_help` answers as before for the queue's gangs, see `help_stamp`),
    `help_changed(before, after)` (the keys whose answers two stamps differ in, see
    `help_changed`), and `retry_at(state, gang)` (when a refused preemption may pass with
    no other change).
    """

    name: str

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        """Cheap: False when no admitted gang could ever be a victim for `gang` now.

        The cycle then trusts its failure memos for `gang`; True makes it re-decide.
        """
        ...

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        """Uids of admitted gangs to evict, or empty for none. May return with kept
        probes in place (`ctx.fits(..., keep=True)`): the caller takes the eviction from
        them or settles (`CycleContext.take`, `settle`)."""
        ...


class PlacementPolicy(Protocol):
    """How to choose nodes (and so devices) for each pod, and domains for a gang.

    Optional: `retry_candidates(state, gang, demand, eligible) -> Iterable[str]`, the node
    order of the engine's second greedy pass; without it that pass takes the most free
    nodes first. A policy that keeps whole nodes or domains should define it, or the
    retry may break what its first pass kept.

    Optional: `node_order_is_local = True` (see `node_order_is_local`), which lets
    what-if probes reuse the pods of a gang's previous placement.
    """

    name: str

    def for_gang(self, gang: Gang) -> PlacementPolicy:
        """The policy that places `gang` (a per-queue router returns the queue's)."""
        ...

    def topology(self, gang: Gang) -> Topology | None:
        """The topology constraint to place `gang` under: its own, or a policy default."""
        ...

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterable[str]:
        """Nodes to try for one pod, best first; the engine checks each fully."""
        ...

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        """Topology domains (or unions of them) to try, best first."""
        ...


class FifoWithinPriority:
    """Higher priority first, then older, then uid; a gang that does not fit is skipped."""

    name = "fifo"

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[Gang]:
        return ctx.state.pending_in_order(queue)

    def observe(self, gang: Gang, admitted: bool) -> None:
        return None

    def static_key(self, gang: Gang) -> tuple[int, float, str]:
        return gang.order_key


def help_key(policy: PreemptionPolicy) -> Callable[[Gang], Hashable] | None:
    """The policy's optional `help_key(gang)`: gangs of one leaf queue with equal keys get
    one answer from `could_help` in any given state. The engine then asks one gang of such
    a class for all of them, and may walk its own index of alike gangs instead of the
    whole backlog (see engine/backlog.py). None: the policy declares none."""
    key = getattr(policy, "help_key", None)
    return key if callable(key) else None


def help_stamp(policy: PreemptionPolicy) -> Callable[[ClusterState, str], object] | None:
    """The policy's optional `help_stamp(state, queue)`: an object that stays the same
    (`is`) for as long as `could_help` would answer as before for every gang of the leaf
    queue (a class of `help_key`, given). The engine then keeps its answers per class
    across admissions and releases that leave the stamp as it was, instead of asking
    again after each. None: the policy declares none (asked again after each change)."""
    stamp = getattr(policy, "help_stamp", None)
    return stamp if callable(stamp) else None


def help_changed(
    policy: PreemptionPolicy,
) -> Callable[[object, object], Collection[Hashable] | None] | None:
    """The policy's optional `help_changed(before, after)`, for two `help_stamp`s of one
    leaf queue (`before` given earlier): the `help_key`s of every class whose
    `could_help` answer under `after` may differ from its answer under `before`, or None
    when the policy cannot say. A queue whose stamp changed then has only those classes
    asked again; the others keep their answers. None: the policy declares none (every
    class of the queue is asked again)."""
    changed = getattr(policy, "help_changed", None)
    return changed if callable(changed) else None


def node_order_is_local(policy: PlacementPolicy) -> bool:
    """The policy's optional `node_order_is_local` flag: `node_candidates` decides
    whether it offers a node, and in what order relative to the others, from that node's
    own state alone (its usage and its devices' holders), the network-attached devices'
    holders, and its arguments; so changing some nodes' state changes neither whether
    nor in what relative order the other nodes are offered. `for_gang` and `topology`
    answer the same for a gang throughout a cycle. A what-if probe may then keep the
    pods of a gang's last placement that a change elsewhere cannot have moved (see
    `CycleContext`). False unless declared True."""
    try:
        return getattr(policy, "node_order_is_local", False) is True
    except Exception:  # a faulty plug-in: no reuse
        return False


class NoPreemption:
    """Never evicts anything: a gang that does not fit waits."""

    name = "none"

    def help_key(self, gang: Gang) -> Hashable:
        return None

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return False

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        return ()


class BinPack:
    """Most-allocated first: fill partly used nodes and domains before touching empty ones."""

    name = "bin-pack"

    @property
    def node_order_is_local(self) -> bool:
        """Nodes by their own free devices (or cpu), then name; a subclass that offers
        nodes its own way declares its own flag."""
        return type(self).node_candidates is BinPack.node_candidates

    def for_gang(self, gang: Gang) -> PlacementPolicy:
        return self

    def topology(self, gang: Gang) -> Topology | None:
        return gang.topology

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterator[str]:
        return demand.candidates(state, eligible, descending=False)

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        fitting = sorted(
            (d for d in domains if d.pods_fitting >= pods_needed), key=lambda d: d.rank()
        )
        short = sorted(
            (d for d in domains if d.pods_fitting < pods_needed),
            key=lambda d: (-d.pods_fitting, d.value),
        )
        return fitting + short
