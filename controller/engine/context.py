"""What policies see of one cycle: the state, the clock, and a what-if probe.

`fits(gang, without)` answers "would `gang` be admitted if these admitted gangs were
evicted?" by really releasing them, placing, and putting everything back exactly as it
was (including the change counters, so no memo is invalidated by a question). It is
what preemption policies use to find minimal victim sets, and what a starvation guard
uses to find a waiting gang's earliest start.

These keep a search of many probes cheap without changing any answer:
- Most probes are answered "no" by counting: before releasing anything, `fits` checks
  that the devices free plus those the victims hold could serve the gang's primary
  device requests at all (per node, and in total): necessary conditions of any
  allocation.
- `fits(..., keep=True)` leaves the victims released until the next probe or `settle`:
  a search whose sets differ by a few gangs (a prefix and a longer one, a set and that
  set less one) then releases and restores only the difference. Nothing may read the
  state until `settle` (the search must not look at usage or reservations meanwhile)
  but through `reservation` and `held_published`, which answer as the state settled.
- A kept probe that fits also leaves the gang's placement applied, and the next probe
  keeps the pods the change cannot have moved (an undo of the difference instead of a
  placement from scratch). The placer's first greedy pass puts each pod on the first
  node, in the policy's order, that can host it; with a policy whose order is local
  (`node_order_is_local`: a node's rank depends on its own state), nodes whose state
  did not change keep their relative order. So when the gangs released or restored
  between two probes touch only nodes `C`, the new pass repeats the old one pod for pod
  up to the first pod that (a) went to a node of `C`, or (b) is of a pod set some node
  of `C` could host now (eligible, room for its requests and its primary device count),
  or (c) could meet a device budget (quota headroom, old or new) smaller than the
  devices the pod could take: nothing else the pass reads differs. The probe keeps the
  pods before that point, puts back or releases the victims, and resumes the pass
  there (`Placer.again`; a topology gang in the same first domain, its domains counted
  again only where a node changed); if the resumed pass fails it places from scratch.
  Every answer (and every placement) is the one a placement from scratch gives;
  `reuse=False` turns it off.
- A kept probe whose kept placement stays an allocation of the gang (the gangs it
  brings back touch none of that placement's nodes, nor network-attached devices)
  skips the devices count above: an allocation exists, so the count would pass.
- `take` hands the engine the last kept probe (or a kept probe of the victims it
  chose) as the admission itself: see engine/cycle.py. When the victims it chose are
  a set an earlier kept probe of the search fitted (the change counters unchanged
  since, so the state with them released is the one that probe placed in), it applies
  the placement that probe found instead of placing again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.engine.cel import SelectorError
from controller.engine.devices import MatchKey
from controller.engine.errors import InvalidInput
from controller.engine.model import Gang
from controller.engine.placement import (
    FirstPass,
    GangPlan,
    Placer,
    device_budget,
    reservation_charge,
)
from controller.engine.reservation import PodPlacement, Reservation

if TYPE_CHECKING:
    from controller.engine.devices import DeviceInventory
    from controller.engine.ledger import Ledger
    from controller.engine.state import ClusterState


@dataclass(slots=True)
class GangDevices:
    """The devices of one match set that one gang's reservation holds."""

    res: Reservation
    items: tuple[tuple[str | None, int], ...]
    """(node, devices) for each node where it holds any (None: network-attached)."""
    total: int
    network: int
    """Of `total`, the network-attached ones."""
    _pods: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def of(res: Reservation, per_node: dict[str | None, int]) -> GangDevices:
        total = sum(per_node.values())
        return GangDevices(res, tuple(per_node.items()), total, per_node.get(None, 0))

    def pods(self, per_pod: int) -> int:
        """How many pods needing `per_pod` devices of the set, all on one node, these
        devices alone could serve (kept per `per_pod`)."""
        hit = self._pods.get(per_pod)
        if hit is None:
            hit = self._pods[per_pod] = sum(
                n // per_pod for node, n in self.items if node is not None
            )
        return hit


@dataclass(slots=True)
class _Counted:
    """`CycleContext._counted`: the gangs a set of victims releases and those it brings
    back (their devices of one match set), what the free devices change by in total and
    on network-attached devices, and the change per node once worked out (`_freed`)."""

    out: list[GangDevices]
    back: list[GangDevices]
    total: int
    network: int
    freed: dict[str | None, int] | None = None


HeldDevices = dict[MatchKey, tuple[int, dict[str, GangDevices]]]
"""Match set -> (the inventory's generation, gang uid -> the devices of the set it
holds): true while the reservation and the inventory are the same."""


class CycleContext:
    """One cycle's view for policies; `probes` counts what-if placements asked."""

    def __init__(
        self,
        state: ClusterState,
        ledger: Ledger,
        placer: Placer,
        plan: Callable[[Gang], GangPlan],
        held: HeldDevices | None = None,
        reuse: bool = True,
    ) -> None:
        self.state = state
        self.ledger = ledger
        self._placer = placer
        self._plan = plan
        self.reuse = reuse
        """Kept probes keep the pods of the gang's last placement a change cannot move
        (see the module docstring); False: every probe places from scratch."""
        self.probes = 0
        self.bound_from = 8
        """The fewest gangs released for which the devices count-out tries its bound on
        pods' worth first (fewer: counting per node is about as quick)."""
        self._placed: FirstPass | None = None
        """The gang's placement a kept probe left applied (reuse only)."""
        self._changed: set[str | None] = set()
        """Nodes whose state changed since `_placed` was placed (None: network-attached
        devices)."""
        self._placed_held: dict[MatchKey, dict[str | None, int]] = {}
        """Devices of a match set `_placed`'s pods hold, per node (`_placed_devices`)."""
        self._placed_touched: tuple[tuple[PodPlacement, ...], frozenset[str | None]] | None = None
        """`_placed`'s pods and the nodes they touch (`_placed_stays`)."""
        self._fitted: dict[frozenset[str], tuple[PodPlacement, ...]] = {}
        """The placements kept probes of `_fitted_for`'s gang found (with a first pass to
        resume from, as `take` needs), by their victims: while the change counters are
        `_fitted_for`'s, the state with exactly those victims released is the one each
        was found in."""
        self._fitted_for: tuple[Gang, tuple[int, int]] | None = None
        self.skip_count = True
        """Probes whose kept placement stays valid skip the devices count (see
        `_placed_stays`); False: every probe counts (the reference the tests compare)."""
        self._touches: dict[str, tuple[Reservation, frozenset[str | None]]] = {}
        """Nodes each admitted gang's reservation touches (`_touched`), per uid."""
        self._devices: HeldDevices = {} if held is None else held
        """Devices of a match set per node that an admitted gang holds (`_held_by`); the
        engine passes one table for all its cycles."""
        self._out: dict[str, tuple[Gang, Reservation]] = {}
        """Gangs a kept probe left released, in the order they were released."""
        self._kept: tuple[Gang, tuple[int, int], str | None] | None = None
        """The kept probes' gang, the change counters before them, its queue blocker."""
        self._settled_held = 0
        """The inventory's held published devices before the kept probes (`held_published`)."""

    @property
    def now(self) -> float:
        return self.state.now

    def is_admitted(self, uid: str) -> bool:
        """Admitted (a kept probe's released victims are)."""
        return uid in self.state.admitted or uid in self._out

    def reservation(self, uid: str) -> Reservation:
        """An admitted gang's reservation (a kept probe's released victims' too)."""
        kept = self._out.get(uid)
        return kept[1] if kept is not None else self.state.admitted[uid]

    def held_published(self) -> int:
        """The inventory's count of held published devices as the state is settled (kept
        probes change the inventory's own count until `settle`)."""
        inv = self.state.inventory
        return inv.held_published if self._kept is None else self._settled_held

    def evictable(self, uid: str) -> bool:
        """Admitted, and not admitted or evicted earlier in this cycle."""
        ledger = self.ledger
        return self.is_admitted(uid) and not ledger.is_open(uid) and uid not in ledger.evicted

    def evictable_among(self, gangs: Iterable[Gang]) -> list[Gang]:
        """The `evictable` ones of `gangs`, in order (a search's candidates, a hundred
        at a time: one call for all of them)."""
        admitted, out, ledger = self.state.admitted, self._out, self.ledger
        is_open, evicted = ledger.is_open, ledger.evicted
        return [
            g
            for g in gangs
            if (g.uid in admitted or g.uid in out) and not is_open(g.uid) and g.uid not in evicted
        ]

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
            self._settled_held = state.inventory.held_published
        else:
            _, stamp, blocker = self._kept
        fitted = self._fitted_for
        if fitted is None or fitted[0] is not gang or fitted[1] != stamp:
            self._fitted_for, self._fitted = (gang, stamp), {}
        try:
            if blocker is not None:
                return False
            for uid in without:
                if uid not in state.admitted and uid not in self._out:
                    raise InvalidInput("fits", f"{uid!r} is not an admitted gang")
            if not self._placed_stays(without) and self._too_few_devices(self._plan(gang), without):
                return False
            self._kept = (gang, stamp, blocker)
            self._hold_out(without)
            return self._fits_kept(gang) if self.reuse else self._fits_now(gang)
        except SelectorError:
            self._drop_placed()
            return False  # a request selector that does not compile: the gang never fits
        except BaseException:
            self.settle()
            raise
        finally:
            if not keep:
                self.settle()

    def take(
        self, gang: Gang, victims: Sequence[str]
    ) -> tuple[tuple[PodPlacement, ...], list[tuple[Gang, Reservation]]] | None:
        """The gang's placement with exactly `victims` (distinct, evictable) released, as
        placing it after evicting them would find it, handed over with the victims (in
        that order, released without requeue): from the kept probes if the last one was
        of this set, else from a kept probe of it now. The change counters are then as
        if the victims had been released after `settle`. None, changing nothing beyond
        what a kept probe may: no such placement to hand over (the caller settles)."""
        if not self.reuse or not victims or len(set(victims)) != len(victims):
            return None
        if not all(self.evictable(uid) for uid in victims):
            return None
        kept = self._kept
        shown = kept is not None and kept[0] is gang and self._placed is not None
        if shown and set(self._out) == set(victims):
            assert self._placed is not None
            pods = self._placed.pods
        elif (found := self._found(gang, victims)) is not None:
            kept, pods = found
        else:
            if not self.fits(gang, victims, keep=True) or self._placed is None:
                return None
            kept = self._kept
            pods = self._placed.pods
        assert kept is not None
        released = [self._out.pop(uid) for uid in victims]
        for victim, res in released:
            self.state.journal_change(victim, res)
        self._placed, self._kept, self._changed = None, None, set()
        self._placed_held.clear()
        epoch, generation = kept[1]
        self.state.capacity_epoch = epoch + len(victims)
        self.state.admission_generation = generation + len(victims)
        return pods, released

    def _found(
        self, gang: Gang, victims: Sequence[str]
    ) -> tuple[tuple[Gang, tuple[int, int], str | None], tuple[PodPlacement, ...]] | None:
        """For `take`: the placement a kept probe of exactly `victims` found for the gang
        since the state last changed (`_fitted`), applied again with exactly them
        released, as the kept probe of them `take` would otherwise ask (and count) finds
        it: its kept probes' state and the pods; None: no such probe."""
        fitted = self._fitted_for
        if fitted is None or fitted[0] is not gang:
            return None
        if self._kept is not None and self._kept[0] is not gang:
            self.settle()
        state = self.state
        kept = self._kept
        stamp = kept[1] if kept is not None else (state.capacity_epoch, state.admission_generation)
        if fitted[1] != stamp:
            return None
        pods = self._fitted.get(frozenset(victims))
        if pods is None:
            return None
        self.probes += 1
        if kept is None:
            kept = self._kept = (gang, stamp, None)
            self._settled_held = state.inventory.held_published
        self._drop_placed()
        self._hold_out(victims)
        for pod in pods:
            state.apply_pod(gang.uid, pod)
        return kept, pods

    @property
    def placed(self) -> tuple[PodPlacement, ...] | None:
        """The gang's pods a kept probe left applied (None: none)."""
        return self._placed.pods if self._placed is not None else None

    def kept(self) -> bool:
        """Whether kept probes left anything to `settle`."""
        return self._kept is not None or self._placed is not None

    def settle(self) -> None:
        """Release the gang's placement a kept probe left applied, restore every gang
        kept probes left released, and the change counters."""
        self._drop_placed()
        if self._kept is None:
            return
        stamp = self._kept[1]
        self._hold_out(())
        self._kept = None
        self.state.capacity_epoch, self.state.admission_generation = stamp

    def _hold_out(self, without: Sequence[str]) -> None:
        """Make the released gangs exactly `without`: restore the others (newest first),
        then release the missing ones. The kept placement's pods from the first one on a
        node they touch are released first (restored gangs get their room back)."""
        state, out = self.state, self._out
        wanted = set(without)
        back = [u for u in out if u not in wanted]
        gone = [u for u in without if u not in out]
        if self._placed is not None and (back or gone):
            changed: set[str | None] = set()
            for uid in back:
                changed |= self._touched(uid)
            for uid in gone:
                changed |= self._touched(uid)
            self._cut_placed(changed)
        with state.unjournaled():  # all back before anyone reads, or journaled by `take`
            for uid in reversed(back):
                victim, res = out.pop(uid)
                state.restore(victim, res, trusted=True)  # released here, nothing took it
            for uid in gone:
                victim = state.admitted_gangs[uid]
                out[uid] = (victim, state.release(uid))

    # ---- the kept placement -----------------------------------------------------------
    def _touched(self, uid: str) -> frozenset[str | None]:
        """The nodes an admitted gang's pods and devices are on (None for a device that
        is network-attached or not published): what releasing or restoring it changes."""
        res = self.reservation(uid)
        hit = self._touches.get(uid)
        if hit is not None and hit[0] is res:
            return hit[1]
        touched = frozenset(self._nodes_of(res.pods))
        self._touches[uid] = (res, touched)
        return touched

    def _placed_stays(self, without: Sequence[str]) -> bool:
        """Whether the kept placement stays an allocation of the gang with `without`
        released: no gang coming back touches a node of its pods or devices, nor
        network-attached devices (gangs released only free more). Then the devices count
        (a necessary condition of any allocation) passes and is not made."""
        placed = self._placed
        if placed is None or not self.skip_count:
            return False
        wanted = set(without)
        back = [u for u in self._out if u not in wanted]
        if not back:
            return True
        touched = self._placed_touched
        if touched is None or touched[0] is not placed.pods:
            touched = self._placed_touched = (placed.pods, self._pods_touch(placed.pods))
        nodes = touched[1]
        return all(nodes.isdisjoint(self._touched(u)) for u in back)

    def _pods_touch(self, pods: Sequence[PodPlacement]) -> frozenset[str | None]:
        """The nodes pods and their devices are on, and None (network-attached or
        unpublished devices) whether or not any is: a gang coming back that touches
        those never leaves the placement as it was."""
        return frozenset(self._nodes_of(pods) | {None})

    def _nodes_of(self, pods: Sequence[PodPlacement]) -> set[str | None]:
        """The nodes pods and their devices are on (None: a network-attached or
        unpublished device)."""
        devices = self.state.inventory.devices
        nodes: set[str | None] = set()
        for pod in pods:
            nodes.add(pod.node)
            for claim in pod.claims:
                for da in claim.devices:
                    d = devices.get(da.device)
                    nodes.add(None if d is None else d.node)
        return nodes

    def _cut_placed(self, changed: set[str | None]) -> None:
        """Release the kept pods from the first one on a node of `changed` on (all of
        them if network-attached devices changed hands), and note the change."""
        placed = self._placed
        assert placed is not None
        pods = placed.pods
        if None in changed:
            cut = 0
        else:
            cut = next((i for i, p in enumerate(pods) if p.node in changed), len(pods))
        self._release_placed(cut)
        self._changed |= changed

    def _release_placed(self, keep: int) -> None:
        """Release the kept pods after the first `keep`, newest first."""
        placed = self._placed
        assert placed is not None
        state, uid = self.state, placed.gang_uid
        for pod in reversed(placed.pods[keep:]):
            state.release_pod(uid, pod)
        if keep < len(placed.pods):
            placed.pods = placed.pods[:keep]
            self._placed_held.clear()

    def _drop_placed(self) -> None:
        if self._placed is not None:
            self._release_placed(0)
            self._placed = None
        self._changed = set()

    def _fits_kept(self, gang: Gang) -> bool:
        """`_fits_now`, keeping the gang's placement applied when it fits and placing
        again from the kept one (see the module docstring)."""
        state = self.state
        plan = self._plan(gang)
        if state.quota.check(gang.queue, plan.minimum_charge) is not None:
            self._drop_placed()
            return False
        budget = device_budget(state.quota, gang.queue, plan)
        placed, self._placed = self._placed, None
        self._placed_held.clear()
        if placed is None:
            outcome = self._placer.place(plan, budget)
        else:  # the placer releases what it does not keep
            outcome = self._placer.again(plan, budget, placed, self._changed)
        self._changed = set()
        pods = outcome.pods
        if pods is None:
            return False
        charge = reservation_charge(pods)
        if state.quota.check_placed(gang.queue, charge, plan.minimum_charge) is not None:
            for pod in reversed(pods):
                state.release_pod(gang.uid, pod)
            return False
        self._placed = self._placer.first_pass(plan, outcome, budget)
        if self._placed is None:  # nothing to resume from: release now
            for pod in reversed(pods):
                state.release_pod(gang.uid, pod)
        else:
            self._fitted[frozenset(self._out)] = pods
        return True

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
        Counts every device `without` hold as coming free, so a "no" here is the probe's.

        Pods' worth, when `without` releases many gangs and brings none back: the pods
        the free devices serve now plus those each gang's devices serve by themselves
        (`GangDevices.pods`) are at most the pods served with all of them free (a node's
        devices serve at least the pods its parts serve apart); when that is enough, the
        count per node is not made (a search's first question, all its candidates)."""
        inv = self.state.inventory
        need: dict[MatchKey, int] = {}
        counted_of: dict[MatchKey, _Counted] = {}
        for demand in plan.demands:
            if demand.primary is None:
                continue
            mk, per_pod = demand.primary
            ms = inv.match_set(mk)
            if ms.shareable or ms.class_missing or per_pod <= 0:
                continue
            count = demand.pod_set.count
            need[mk] = need.get(mk, 0) + per_pod * count
            counted = counted_of.get(mk)
            if counted is None:
                counted = counted_of[mk] = self._counted(mk, without)
            if ms.free.get(None, 0) or counted.network > 0:
                continue
            fitting = ms.pods_fitting(per_pod)
            if (
                len(counted.out) >= self.bound_from
                and not counted.back
                and fitting + sum(g.pods(per_pod) for g in counted.out) >= count
            ):
                continue
            if counted.freed is None:
                counted.freed = self._freed(mk, counted)
            free_on = ms.free.get
            for node, n in counted.freed.items():
                free = free_on(node, 0)
                fitting += (free + n) // per_pod - free // per_pod
            if fitting < count:
                return True
        for mk, n in need.items():
            ms = inv.match_set(mk)
            if ms.total_free() + counted_of[mk].total < n:
                return True
        return False

    def _counted(self, mk: MatchKey, without: Sequence[str]) -> _Counted:
        """How releasing `without` changes the free devices of match set `mk`: the gangs
        it releases, those released now that it brings back, and the change in total
        and on network-attached devices (the sums of `_freed`)."""
        released = self._out
        admitted = self.state.admitted
        held = self._held_in(mk)
        out: list[GangDevices] = []
        total = network = 0
        for uid in without:
            if uid not in released:
                res = admitted[uid]
                gang = held.get(uid)
                if gang is None or gang.res is not res:
                    gang = self._held_by(held, uid, mk)
                out.append(gang)
                total += gang.total
                network += gang.network
        back: list[GangDevices] = []
        if released:
            wanted = set(without)
            for uid in released:
                if uid not in wanted:
                    gang = self._held_by(held, uid, mk)
                    back.append(gang)
                    total -= gang.total
                    network -= gang.network
        if self._placed is not None:  # the gang's kept pods are not there either
            placed = self._placed_devices(mk)
            total += sum(placed.values())
            network += placed.get(None, 0)
        return _Counted(out, back, total, network)

    def _freed(self, mk: MatchKey, counted: _Counted) -> dict[str | None, int]:
        """How the free devices of match set `mk` per node change from now to the victims
        of `counted` released: up by what they hold, down by what gangs released now but
        not victims hold (they come back)."""
        out: dict[str | None, int] = {}
        get = out.get
        for gang in counted.out:
            for node, n in gang.items:
                out[node] = get(node, 0) + n
        for gang in counted.back:
            for node, n in gang.items:
                out[node] = get(node, 0) - n
        if self._placed is not None:  # the gang's kept pods are not there either
            for node, n in self._placed_devices(mk).items():
                out[node] = get(node, 0) + n
        return out

    def _placed_devices(self, mk: MatchKey) -> dict[str | None, int]:
        """Devices of match set `mk` the kept placement's pods hold, per node."""
        placed = self._placed
        assert placed is not None
        hit = self._placed_held.get(mk)
        if hit is None:
            inv = self.state.inventory
            hit = self._placed_held[mk] = _devices_in(inv, mk, placed.pods)
        return hit

    def _held_in(self, mk: MatchKey) -> dict[str, GangDevices]:
        """The table of `_held_by` for match set `mk`, emptied when the inventory's
        generation moved since it was filled (kept across cycles)."""
        generation = self.state.inventory.generation
        kept = self._devices.get(mk)
        if kept is None or kept[0] != generation:
            if kept is None and len(self._devices) > 256:
                self._devices.clear()
            kept = self._devices[mk] = (generation, {})
        return kept[1]

    def _held_by(self, held: dict[str, GangDevices], uid: str, mk: MatchKey) -> GangDevices:
        """The devices of match set `mk` one admitted gang holds: kept in `held`
        (`_held_in(mk)`) while its reservation is the same."""
        res = self.reservation(uid)
        hit = held.get(uid)
        if hit is not None and hit.res is res:
            return hit
        if len(held) > 65536:
            held.clear()
        gang = held[uid] = GangDevices.of(res, _devices_in(self.state.inventory, mk, res.pods))
        return gang

    def _fits_now(self, gang: Gang) -> bool:
        state = self.state
        plan = self._plan(gang)
        if state.quota.check(gang.queue, plan.minimum_charge) is not None:
            return False
        outcome = self._placer.place(plan, device_budget(state.quota, gang.queue, plan))
        if outcome.pods is None:
            return False
        charge = reservation_charge(outcome.pods)
        ok = state.quota.check_placed(gang.queue, charge, plan.minimum_charge) is None
        for pod in reversed(outcome.pods):
            state.release_pod(gang.uid, pod)
        return ok


def _devices_in(
    inv: DeviceInventory, mk: MatchKey, pods: Sequence[PodPlacement]
) -> dict[str | None, int]:
    """Devices of match set `mk` the pods hold, per node."""
    members = inv.match_set(mk).by_node
    out: dict[str | None, int] = {}
    for pod in pods:
        for claim in pod.claims:
            for da in claim.devices:
                d = inv.devices.get(da.device)
                if d is not None and da.device in members.get(d.node, ()):
                    out[d.node] = out.get(d.node, 0) + 1
    return out
