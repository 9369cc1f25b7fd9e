"""What policies see of one cycle: the state, the clock, and a what-if probe.

`fits(gang, without)` answers "would `gang` be admitted if these admitted gangs were
evicted?" by really releasing them, placing, and putting everything back exactly as it
was (including the change counters, so no memo is invalidated by a question). It is
what preemption policies use to find minimal victim sets, and what a starvation guard
uses to find a waiting gang's earliest start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from controller.engine.cel import SelectorError
from controller.engine.errors import InvalidInput
from controller.engine.model import Gang
from controller.engine.placement import GangPlan, Placer, device_budget, reservation_charge
from controller.engine.reservation import Reservation

if TYPE_CHECKING:
    from controller.engine.ledger import Ledger
    from controller.engine.state import ClusterState


class CycleContext:
    """One cycle's view for policies; `probes` counts what-if placements asked."""

    def __init__(
        self, state: ClusterState, ledger: Ledger, placer: Placer, plan: Callable[[Gang], GangPlan]
    ) -> None:
        self.state = state
        self.ledger = ledger
        self._placer = placer
        self._plan = plan
        self.probes = 0

    @property
    def now(self) -> float:
        return self.state.now

    def evictable(self, uid: str) -> bool:
        """Admitted, and not admitted or evicted earlier in this cycle."""
        ledger = self.ledger
        return uid in self.state.admitted and not ledger.is_open(uid) and uid not in ledger.evicted

    def fits(self, gang: Gang, without: Sequence[str] = ()) -> bool:
        """Would `gang` pass queue, quota and placement with `without` evicted? Changes
        nothing, even when it raises (`without` naming a gang that is not admitted)."""
        state = self.state
        self.probes += 1
        if state.queue_blocker(gang) is not None:
            return False
        stamp = (state.capacity_epoch, state.admission_generation)
        released: list[tuple[Gang, Reservation]] = []
        try:
            for uid in without:
                if uid not in state.admitted:
                    raise InvalidInput("fits", f"{uid!r} is not an admitted gang")
                released.append((state.admitted_gangs[uid], state.release(uid)))
            return self._fits_now(gang)
        except SelectorError:
            return False  # a request selector that does not compile: the gang never fits
        finally:
            for victim, res in reversed(released):
                state.restore(victim, res)
            state.capacity_epoch, state.admission_generation = stamp

    def _fits_now(self, gang: Gang) -> bool:
        state = self.state
        plan = self._plan(gang)
        if state.quota.check(gang.queue, plan.minimum_charge) is not None:
            return False
        outcome = self._placer.place(plan, device_budget(state.quota, gang.queue, plan))
        if outcome.pods is None:
            return False
        ok = state.quota.check(gang.queue, reservation_charge(outcome.pods)) is None
        for pod in reversed(outcome.pods):
            state.release_pod(gang.uid, pod)
        return ok
