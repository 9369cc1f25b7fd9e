"""What policies see of one cycle: the state, the clock, and a what-if probe.

`fits(gang, without)` answers "would `gang` be admitted if these admitted gangs were
evicted?" by really releasing them, placing, and putting everything back exactly as it
was (including the change counters, so no memo is invalidated by a question). It is
what preemption policies use to find minimal victim sets, and what a starvation guard
uses to find a waiting gang's earliest start.

Two things keep a search of many probes cheap without changing any answer:
- Most probes are answered "no" by counting: before releasing anything, `fits` checks
  that the devices free plus those the victims hold could serve the gang's primary
  device requests at all (per node, and in total): necessary conditions of any
  allocation.
- `fits(..., keep=True)` leaves the victims released until the next probe or `settle`:
  a search whose sets differ by a few gangs (a prefix and a longer one, a set and that
  set less one) then releases and restores only the difference. Nothing may read the
  state until `settle` (the search must not look at usage or reservations meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from controller.engine.cel import SelectorError
from controller.engine.devices import MatchKey
from controller.engine.errors import InvalidInput
from controller.engine.model import Gang
from controller.engine.placement import GangPlan, Placer, device_budget, reservation_charge
from controller.engine.reservation import Reservation

if TYPE_CHECKING:
    from controller.engine.ledger import Ledger
    from controller.engine.state import ClusterState

HeldDevices = dict[tuple[str, MatchKey], tuple[Reservation, int, dict[str | None, int]]]
"""(gang uid, match set) -> (its reservation, the inventory's generation, devices of the
set it holds per node): true while the reservation and the inventory are the same."""


class CycleContext:
    """One cycle's view for policies; `probes` counts what-if placements asked."""

    def __init__(
        self,
        state: ClusterState,
        ledger: Ledger,
        placer: Placer,
        plan: Callable[[Gang], GangPlan],
        held: HeldDevices | None = None,
    ) -> None:
        self.state = state
        self.ledger = ledger
        self._placer = placer
        self._plan = plan
        self.probes = 0
        self._devices: HeldDevices = {} if held is None else held
        """Devices of a match set per node that an admitted gang holds (`_held_by`); the
        engine passes one table for all its cycles."""
        self._out: dict[str, tuple[Gang, Reservation]] = {}
        """Gangs a kept probe left released, in the order they were released."""
        self._kept: tuple[Gang, tuple[int, int], str | None] | None = None
        """The kept probes' gang, the change counters before them, its queue blocker."""

    @property
    def now(self) -> float:
        return self.state.now

    def evictable(self, uid: str) -> bool:
        """Admitted, and not admitted or evicted earlier in this cycle."""
        ledger = self.ledger
        return uid in self.state.admitted and not ledger.is_open(uid) and uid not in ledger.evicted

    def fits(self, gang: Gang, without: Sequence[str] = (), keep: bool = False) -> bool:
        """Would `gang` pass queue, quota and placement with `without` evicted? Changes
        nothing, even when it raises (`without` naming a gang that is not admitted),
        unless `keep` (see the module docstring)."""
        state = self.state
        self.probes += 1
        if self._kept is not None and self._kept[0] is not gang:
            self.settle()
        if self._kept is None:
            blocker = state.queue_blocker(gang)
            stamp = (state.capacity_epoch, state.admission_generation)
        else:
            _, stamp, blocker = self._kept
        try:
            if blocker is not None:
                return False
            for uid in without:
                if uid not in state.admitted and uid not in self._out:
                    raise InvalidInput("fits", f"{uid!r} is not an admitted gang")
            if self._too_few_devices(self._plan(gang), without):
                return False
            self._kept = (gang, stamp, blocker)
            self._hold_out(without)
            return self._fits_now(gang)
        except SelectorError:
            return False  # a request selector that does not compile: the gang never fits
        except BaseException:
            self.settle()
            raise
        finally:
            if not keep:
                self.settle()

    def settle(self) -> None:
        """Restore every gang a kept probe left released, and the change counters."""
        if self._kept is None:
            return
        stamp = self._kept[1]
        self._hold_out(())
        self._kept = None
        self.state.capacity_epoch, self.state.admission_generation = stamp

    def _hold_out(self, without: Sequence[str]) -> None:
        """Make the released gangs exactly `without`: restore the others (newest first),
        then release the missing ones."""
        state, out = self.state, self._out
        wanted = set(without)
        for uid in reversed([u for u in out if u not in wanted]):
            victim, res = out.pop(uid)
            state.restore(victim, res, trusted=True)  # released here, nothing took it since
        for uid in without:
            if uid not in out:
                victim = state.admitted_gangs[uid]
                out[uid] = (victim, state.release(uid))

    def too_few_devices(self, gang: Gang, without: Sequence[str]) -> bool:
        """Whether counting devices shows that `gang` cannot fit even with every gang of
        `without` (admitted gangs) evicted: then it fits with no part of them evicted
        either (evicting less frees no more), and no probe of such a set says yes.
        Changes nothing; may be asked between kept probes."""
        return self._too_few_devices(self._plan(gang), without)

    def _too_few_devices(self, plan: GangPlan, without: Sequence[str]) -> bool:
        """Whether the devices free with `without` released cannot serve every pod's
        primary request: fewer in total than the pods need, or (without network-attached
        ones to combine with) fewer pods' worth on the nodes than a pod set has pods.
        Counts every device `without` hold as coming free, so a "no" here is the probe's."""
        inv = self.state.inventory
        need: dict[MatchKey, int] = {}
        freed_of: dict[MatchKey, dict[str | None, int]] = {}
        for demand in plan.demands:
            if demand.primary is None:
                continue
            mk, per_pod = demand.primary
            ms = inv.match_set(mk)
            if ms.shareable or ms.class_missing or per_pod <= 0:
                continue
            count = demand.pod_set.count
            need[mk] = need.get(mk, 0) + per_pod * count
            freed = freed_of.get(mk)
            if freed is None:
                freed = freed_of[mk] = self._freed(mk, without)
            if ms.free.get(None, 0) or freed.get(None, 0) > 0:
                continue
            fitting = ms.pods_fitting(per_pod)
            for node, n in freed.items():
                free = ms.free.get(node, 0)
                fitting += (free + n) // per_pod - free // per_pod
            if fitting < count:
                return True
        for mk, n in need.items():
            ms = inv.match_set(mk)
            if ms.total_free() + sum(freed_of[mk].values()) < n:
                return True
        return False

    def _freed(self, mk: MatchKey, without: Sequence[str]) -> dict[str | None, int]:
        """How the free devices of match set `mk` per node change from now to `without`
        released: up by what they hold, down by what gangs released now but not in
        `without` hold (they come back)."""
        out: dict[str | None, int] = {}
        wanted = set(without)
        changes = [(u, +1) for u in without if u not in self._out]
        changes += [(u, -1) for u in self._out if u not in wanted]
        for uid, sign in changes:
            for node, n in self._held_by(uid, mk).items():
                out[node] = out.get(node, 0) + sign * n
        return out

    def _held_by(self, uid: str, mk: MatchKey) -> dict[str | None, int]:
        """Devices of match set `mk` one admitted gang holds, per node (kept per cycle
        while its reservation is the same)."""
        state = self.state
        kept = self._out.get(uid)
        res = kept[1] if kept is not None else state.admitted[uid]
        inv = state.inventory
        hit = self._devices.get((uid, mk))
        if hit is not None and hit[0] is res and hit[1] == inv.generation:
            return hit[2]
        members = inv.match_set(mk).by_node
        out: dict[str | None, int] = {}
        for pod in res.pods:
            for claim in pod.claims:
                for da in claim.devices:
                    d = inv.devices.get(da.device)
                    if d is not None and da.device in members.get(d.node, ()):
                        out[d.node] = out.get(d.node, 0) + 1
        if len(self._devices) > 65536:
            self._devices.clear()
        self._devices[(uid, mk)] = (res, inv.generation, out)
        return out

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
