"""The policy interfaces the engine calls; implementations live in `policies/`.

Built-ins here make the engine usable alone: FIFO within priority (best effort: what
does not fit is skipped), no preemption, and bin-packing placement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from controller.engine.model import Gang

if TYPE_CHECKING:
    from controller.engine.placement import Domain, PodDemand
    from controller.engine.state import ClusterState


class OrderingPolicy(Protocol):
    """Which pending gang the cycle tries next."""

    name: str

    def order(self, state: ClusterState) -> Iterable[Gang]:
        """Pending gangs in the order to try them; may stop early (strict FIFO)."""
        ...

    def observe(self, gang: Gang, admitted: bool) -> None:
        """Told after each attempt, before the next gang is drawn from `order`."""
        ...


class PreemptionPolicy(Protocol):
    """Which admitted gangs to evict so that `gang` fits; always whole gangs."""

    name: str

    def victims(self, state: ClusterState, gang: Gang, reason: str) -> Sequence[str]:
        """Uids of admitted gangs to evict, or empty for none."""
        ...


class PlacementPolicy(Protocol):
    """How to choose nodes (and so devices) for each pod, and domains for a gang."""

    name: str

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterable[str]:
        """Nodes to try for one pod, best first; the engine checks each fully."""
        ...

    def order_domains(self, domains: list[Domain], pods_needed: int) -> list[Domain]:
        """Topology domains to try, best first."""
        ...


class FifoWithinPriority:
    """Higher priority first, then older, then uid; a gang that does not fit is skipped."""

    name = "fifo"

    def order(self, state: ClusterState) -> Iterator[Gang]:
        return state.pending_in_order()

    def observe(self, gang: Gang, admitted: bool) -> None:
        return None


class NoPreemption:
    """Never evicts anything: a gang that does not fit waits."""

    name = "none"

    def victims(self, state: ClusterState, gang: Gang, reason: str) -> Sequence[str]:
        return ()


class BinPack:
    """Most-allocated first: fill partly used nodes and domains before touching empty ones."""

    name = "bin-pack"

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterator[str]:
        return demand.candidates(state, eligible, descending=False)

    def order_domains(self, domains: list[Domain], pods_needed: int) -> list[Domain]:
        fitting = sorted(
            (d for d in domains if d.pods_fitting >= pods_needed), key=lambda d: d.rank()
        )
        short = sorted(
            (d for d in domains if d.pods_fitting < pods_needed),
            key=lambda d: (-d.pods_fitting, d.value),
        )
        return fitting + short
