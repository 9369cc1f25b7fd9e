"""The ledger: tentative admissions and evictions of one cycle, committed or rolled back.

Everything the ledger records is already applied to the ClusterState, so later decisions
in the same cycle see it. `commit` makes a gang's reservation final (the controller calls
it once the admission record is written); `rollback` gives back exactly what was
reserved and restores any gangs evicted for it, so a failed write leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.engine.errors import InvalidInput
from controller.engine.model import Gang
from controller.engine.reservation import PodPlacement, Reservation
from controller.engine.state import ClusterState, ReservationConflict


@dataclass
class _Entry:
    gang: Gang
    reservation: Reservation
    evicted: list[tuple[Gang, Reservation]] = field(default_factory=list)
    pending_since: float | None = None


class Ledger:
    """Open reservations of one cycle, in the order they were made."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._open: dict[str, _Entry] = {}
        self.evicted: set[str] = set()
        self.unrestorable: list[str] = []
        """Victims whose eviction was undone but whose reservation no longer held: still
        running in the cluster, pending here; the controller must evict them for real."""
        self._loose: dict[str, tuple[Gang, Reservation]] = {}
        """Evicted, but neither restored nor attached to an admission yet."""

    def evict(self, victims: list[str]) -> list[tuple[Gang, Reservation]]:
        """Tentatively release whole admitted gangs; they go back to pending. Refuses,
        changing nothing, a list naming a gang that is not admitted or one twice."""
        admitted = self.state.admitted_gangs
        if len(set(victims)) != len(victims) or not all(uid in admitted for uid in victims):
            raise InvalidInput("eviction", f"victims must be distinct admitted gangs: {victims}")
        out = []
        for uid in victims:
            gang = admitted[uid]
            out.append((gang, self.state.release(uid, requeue=True)))
            self.evicted.add(uid)
            self._loose[uid] = out[-1]
        return out

    def adopt(self, released: list[tuple[Gang, Reservation]]) -> list[tuple[Gang, Reservation]]:
        """`evict` for gangs a what-if probe released already (`CycleContext.take`):
        they go back to pending and are recorded as evicted."""
        for gang, res in released:
            self.state.requeue(gang, res)
            self.evicted.add(gang.uid)
            self._loose[gang.uid] = (gang, res)
        return list(released)

    def restore(self, evicted: list[tuple[Gang, Reservation]]) -> list[str]:
        """Undo `evict`; a victim whose reservation no longer holds (its node or devices
        changed meanwhile) stays pending. Returns those victims."""
        lost: list[str] = []
        for gang, res in reversed(evicted):
            self._loose.pop(gang.uid, None)
            try:
                self.state.restore(gang, res, undo=True)
            except ReservationConflict:
                lost.append(gang.uid)
            self.evicted.discard(gang.uid)
        return lost

    def restore_loose(self) -> None:
        """Undo evictions that no admission took over (a decision that did not finish)."""
        self.unrestorable.extend(self.restore(list(self._loose.values())))

    def admit(
        self,
        gang: Gang,
        pods: tuple[PodPlacement, ...],
        charge: dict[str, int],
        evicted: list[tuple[Gang, Reservation]] | None = None,
    ) -> Reservation:
        """Hold pods already applied to the state and charge the queue: tentative."""
        now = self.state.now
        reservation = Reservation.placed(gang.uid, gang.queue, pods, charge, admitted_at=now)
        since = self.state.pending_since.get(gang.uid)
        self.state.admit(gang, reservation)
        entry = self._open[gang.uid] = _Entry(gang, reservation, list(evicted or ()), since)
        for victim, _ in entry.evicted:
            self._loose.pop(victim.uid, None)
        quota = self.state.quota
        borrowed = {r: b for r in sorted(charge) if (b := quota.borrowed(gang.queue, r))}
        if borrowed:
            reservation = Reservation.placed(gang.uid, gang.queue, pods, charge, borrowed, now)
            entry.reservation = reservation
            self.state.admitted[gang.uid] = reservation
        return reservation

    def open_uids(self) -> list[str]:
        return list(self._open)

    def open_count(self) -> int:
        return len(self._open)

    def opened_since(self, count: int) -> list[str]:
        """Reservations made after `open_count()` returned `count`, oldest first."""
        return list(self._open)[count:]

    def is_open(self, uid: str) -> bool:
        """Admitted in this cycle and not yet committed: never a preemption victim."""
        return uid in self._open

    def commit(self, uid: str) -> Reservation:
        entry = self._open.pop(uid, None)
        if entry is None:
            raise InvalidInput(f"gang {uid}", "has no open reservation in this ledger")
        for gang, _ in entry.evicted:
            self.evicted.discard(gang.uid)
        return entry.reservation

    def rollback(self, uid: str) -> list[str]:
        """Release the gang's reservation, back to pending, and restore its victims.

        Reservations made after one that evicted gangs may sit on what the eviction
        freed, so they are rolled back first (newest first). Returns every gang rolled
        back, `uid` last; the caller treats them all as not admitted.
        """
        if uid not in self._open:
            raise InvalidInput(f"gang {uid}", "has no open reservation in this ledger")
        order = list(self._open)
        undone: list[str] = []
        if self._open[uid].evicted:
            for later in reversed(order[order.index(uid) + 1 :]):
                undone.extend(self.rollback(later))
        entry = self._open.pop(uid)
        self.state.release(uid, requeue=True)
        if entry.pending_since is not None:
            self.state.pending_since[uid] = entry.pending_since
        self.unrestorable.extend(self.restore(entry.evicted))
        undone.append(uid)
        return undone

    def commit_all(self) -> list[Reservation]:
        return [self.commit(uid) for uid in list(self._open)]

    def rollback_all(self) -> list[str]:
        undone: list[str] = []
        for uid in reversed(list(self._open)):
            if uid in self._open:
                undone.extend(self.rollback(uid))
        return undone
