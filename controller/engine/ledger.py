"""The ledger: tentative admissions and evictions of one cycle, committed or rolled back.

Everything the ledger records is already applied to the ClusterState, so later decisions
in the same cycle see it. `commit` makes a gang's reservation final (the controller calls
it once the admission record is written); `rollback` gives back exactly what was
reserved and restores any gangs evicted for it, so a failed write leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from controller.engine.errors import InvalidInput
from controller.engine.model import Gang
from controller.engine.reservation import PodPlacement, Reservation
from controller.engine.state import ClusterState


@dataclass
class _Entry:
    gang: Gang
    reservation: Reservation
    evicted: list[tuple[Gang, Reservation]] = field(default_factory=list)


class Ledger:
    """Open reservations of one cycle, in the order they were made."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._open: dict[str, _Entry] = {}
        self.evicted: set[str] = set()

    def evict(self, victims: list[str]) -> list[tuple[Gang, Reservation]]:
        """Tentatively release whole admitted gangs; they go back to pending."""
        out = []
        for uid in victims:
            gang = self.state.admitted_gangs[uid]
            out.append((gang, self.state.release(uid, requeue=True)))
            self.evicted.add(uid)
        return out

    def restore(self, evicted: list[tuple[Gang, Reservation]]) -> None:
        """Undo `evict` for gangs whose eviction turned out not to help."""
        for gang, res in reversed(evicted):
            self.state.restore(gang, res)
            self.evicted.discard(gang.uid)

    def admit(
        self,
        gang: Gang,
        pods: tuple[PodPlacement, ...],
        charge: dict[str, int],
        evicted: list[tuple[Gang, Reservation]] | None = None,
    ) -> Reservation:
        """Hold pods already applied to the state and charge the queue: tentative."""
        reservation = Reservation(gang.uid, gang.queue, pods, charge)
        self.state.admit(gang, reservation)
        quota = self.state.quota
        borrowed = {r: b for r in sorted(charge) if (b := quota.borrowed(gang.queue, r))}
        if borrowed:
            reservation = replace(reservation, borrowed=borrowed)
            self.state.admitted[gang.uid] = reservation
        self._open[gang.uid] = _Entry(gang, reservation, list(evicted or ()))
        return reservation

    def open_uids(self) -> list[str]:
        return list(self._open)

    def commit(self, uid: str) -> Reservation:
        entry = self._open.pop(uid, None)
        if entry is None:
            raise InvalidInput(f"gang {uid}", "has no open reservation in this ledger")
        for gang, _ in entry.evicted:
            self.evicted.discard(gang.uid)
        return entry.reservation

    def rollback(self, uid: str) -> None:
        """Release the gang's reservation, back to pending, and restore its victims."""
        entry = self._open.pop(uid, None)
        if entry is None:
            raise InvalidInput(f"gang {uid}", "has no open reservation in this ledger")
        self.state.release(uid, requeue=True)
        self.restore(entry.evicted)

    def commit_all(self) -> list[Reservation]:
        return [self.commit(uid) for uid in list(self._open)]

    def rollback_all(self) -> None:
        for uid in reversed(list(self._open)):
            self.rollback(uid)
