"""The admission cycle: take pending gangs in policy order, admit whole gangs or explain.

For each gang: its queue must accept it; its quota lower bound must fit; placement must
find every pod a node and every claim its devices; then the exact charge must fit. If
any step fails, the preemption policy may name whole gangs to evict, and the gang is
retried once against the freed state (evictions are undone if that does not help).

Speed without changing answers: a gang whose shape (pod sets, claims, constraints,
placement policy) failed placement since capacity last grew cannot fit now either, since
within an epoch free capacity only shrinks; such gangs are skipped with the recorded
reason.

Preemption is searched only where the policy says victims could exist (`could_help`), a
gang's failed search is trusted while capacity, queues and who runs are unchanged (and
until the policy's `retry_at`, e.g. a victim's protection ending), and in each cycle a
queue gets one failed search: after its first gang could not preempt, the queue's later
gangs wait for the next cycle (Kueue likewise lets a queue's head preempt), which keeps a
cycle's cost bounded by the number of queues rather than the backlog. With a large
backlog the walk goes over groups of alike gangs (backlog.py) and leaves a group out
while its gangs would fail as its first did and search no victims; `walk_all` is the
reference it must agree with. A group head whose recorded failure holds and for which
deciding would change nothing (`_moot`: no search, no new reason) is passed as decided.

When the search found victims with a what-if probe, its last probe is the admission:
`CycleContext.take` hands over the gang's pods with exactly those victims released (the
state that evicting them and placing the gang again would give), instead of putting the
victims back, evicting them and placing the gang once more.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from typing import Any

from controller.engine.backlog import (
    Backlog,
    Entry,
    Frontier,
    GroupKey,
    HelpClass,
    Room,
    charge_is_exact,
    shortfall,
)
from controller.engine.context import CycleContext, HeldDevices
from controller.engine.feasibility import NeverFit
from controller.engine.guard import Guard, PolicyFault, SafeOrdering, describe
from controller.engine.ledger import Ledger
from controller.engine.model import Gang
from controller.engine.placement import (
    DomainMembers,
    GangPlan,
    PlacementOutcome,
    Placer,
    device_budget,
    reservation_charge,
)
from controller.engine.policy import (
    BinPack,
    FifoWithinPriority,
    NoPreemption,
    OrderingPolicy,
    PlacementPolicy,
    PreemptionPolicy,
    help_changed,
    help_key,
    help_stamp,
)
from controller.engine.reservation import PodPlacement, Reservation
from controller.engine.state import ClusterState, PendingJournal


class Outcome(StrEnum):
    ADMITTED = "Admitted"
    PENDING = "Pending"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the cycle decided for one gang, with a reason a user can act on."""

    gang_uid: str
    outcome: Outcome
    reason: str
    reservation: Reservation | None = None
    victims: tuple[str, ...] = ()
    attempts: int = 0


@dataclass
class CycleResult:
    """Decisions that changed something, the ledger to commit, and effort counters."""

    decisions: list[Decision]
    ledger: Ledger
    considered: int = 0
    skipped: int = 0
    placements_tried: int = 0
    preemption_searches: int = 0
    wake_at: float | None = None
    """When a preemption refused now may succeed with no other change (a victim's
    protection ends): the driver should run a cycle then."""
    faults: list[str] = field(default_factory=list)
    """Plug-in faults, one line each: an ordering policy that failed, and a fault while
    deciding a gang (named; it is also that gang's pending reason)."""

    @property
    def admitted(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome is Outcome.ADMITTED]


@dataclass(slots=True)
class _Memo:
    """A failure and the stamp under which it stays true (see `Engine._still_fails`)."""

    kind: str
    stamp: object
    gang: Gang
    reason: str


@dataclass
class Engine:
    """One ClusterState with its policies; `cycle()` runs one admission cycle."""

    state: ClusterState = field(default_factory=ClusterState)
    ordering: OrderingPolicy = field(default_factory=FifoWithinPriority)
    preemption: PreemptionPolicy = field(default_factory=NoPreemption)
    placement: PlacementPolicy = field(default_factory=BinPack)
    search_bound: int = 8
    reasons: dict[str, str] = field(default_factory=dict)
    never_fit: NeverFit = field(default_factory=NeverFit)
    _plans: dict[str, GangPlan] = field(default_factory=dict)
    _shape_ids: dict[object, int] = field(default_factory=dict)
    _failed_shapes: dict[int, _Memo] = field(default_factory=dict)
    _failed_gangs: dict[str, _Memo] = field(default_factory=dict)
    _failed_preemption: dict[str, _Memo] = field(default_factory=dict)
    _searched_queues: set[str] = field(default_factory=set)
    _guard: Guard = field(default_factory=Guard)
    walk_all: bool = False
    """Walk the ordering's whole order every cycle, never the group index: the reference
    the lazy walk is tested against."""
    copy_dormant: bool = False
    """Copy the dormant groups of the classes preemption helps into the walk at the
    start of each cycle (O(dormant groups)) instead of walking the backlog's sorted
    positions behind cursors: the reference the cursors are tested against."""
    hold_quota: bool = True
    """Under preemption, leave the groups asleep on quota at a cycle's start though their
    room grew, and wake each at its turn if it would not pass as decided then (`False`:
    wake them all at the start, the reference this is tested against; the decisions are
    the same)."""
    _discordant: set[str] = field(default_factory=set)
    """Pending gangs refused quota whose reason told differs from that refusal's (a
    failed search added to it): a searched queue's turn would tell them again."""
    lazy_from: int = 256
    lazy_below: int = 64
    """The group index is built once `lazy_from` gangs wait and dropped below
    `lazy_below`: a short backlog is walked whole, cheaper than keeping the index."""
    _exact_charge: dict[int, bool] = field(default_factory=dict)
    _held: HeldDevices = field(default_factory=dict)
    _domain_members: dict[Hashable, list[DomainMembers]] = field(default_factory=dict)
    _journal: PendingJournal | None = None
    _journal_state: ClusterState | None = None
    _backlog: Backlog | None = None
    _raw: tuple[OrderingPolicy, PreemptionPolicy] | None = None
    _helping: bool = False
    """Preemption may help a gang that does not fit: the walk asks `could_help`."""
    _grouped_by: Callable[[Gang], Hashable] | None = None
    _help_ids: dict[Hashable, int] = field(default_factory=dict)
    _help_cache: dict[HelpClass, bool] = field(default_factory=dict)
    _help_reps: dict[HelpClass, Gang] = field(default_factory=dict)
    _help_stamps: dict[str, object | None] = field(default_factory=dict)
    """The policy's `help_stamp` per queue, in the state `_help_cache` is for."""
    _help_kept: dict[HelpClass, tuple[object, bool]] = field(default_factory=dict)
    """`could_help` per class, with the stamp it was asked under: kept across cycles
    while the backlog (which numbers the classes) and the policy are the same."""
    _queue_helped: dict[str, tuple[object, tuple[HelpClass, ...], set[HelpClass]]] = field(
        default_factory=dict
    )
    """Per queue, under a stamp all of them were asked under, its classes and those
    helped (kept across cycles as `_help_kept`, while the queue has the same classes)."""
    _help_owner: tuple[Backlog, PreemptionPolicy] | None = None
    """The backlog and the policy `_help_kept` and `_queue_helped` are for."""
    _classes_of: dict[str, tuple[HelpClass, ...]] = field(default_factory=dict)
    """The backlog's classes per queue, in this cycle."""
    """The member of each class `could_help` is asked about, in this cycle."""

    def plan(self, gang: Gang) -> GangPlan:
        plan = self._plans.get(gang.uid)
        if plan is None or plan.gang is not gang:
            policy = self.placement.for_gang(gang)
            shape = (GangPlan.shape_of(gang), id(policy), policy.topology(gang))
            plan = GangPlan.of(gang, self._shape_ids.setdefault(shape, len(self._shape_ids)))
            self._plans[gang.uid] = plan
        return plan

    def cycle(self, now: float | None = None) -> CycleResult:
        """Try every pending gang once, in policy order; decisions are deterministic.

        `now` sets the state's clock first (waiting times, attained service). Always
        returns: a plug-in fault or a bad gang leaves that gang pending with the reason
        (see `guard`), and the cycle goes on.
        """
        self._raw = (self.ordering, self.preemption)
        with self._guard.guarding(self) as faults:
            result = self._cycle(now)
        result.faults = faults
        return result

    def _cycle(self, now: float | None) -> CycleResult:
        state = self.state
        if now is not None:
            state.now = now
        ledger = Ledger(state)
        placer = Placer(state, self.placement, self.search_bound, self._domain_members)
        ctx = CycleContext(state, ledger, placer, self.plan, self._held)
        result = CycleResult([], ledger)
        self._searched_queues.clear()
        changed = self._follow_pending()
        try:
            backlog = self._backlog_for(changed)
            if backlog is not None:
                self._walk_groups(backlog, placer, ctx, result)
        except Exception as exc:  # walk the ordering's whole order instead
            self._backlog = backlog = None
            self._lazy_walk_failed(exc)
        if backlog is None:
            for gang in self.ordering.order(ctx):
                self._visit(gang, placer, ctx, result)
        self._forget_gone(changed)
        return result

    def _lazy_walk_failed(self, exc: Exception) -> None:
        """Report what broke the lazy walk: the ordering's `static_key` (the ordering then
        fails for this cycle, as for any ordering fault), another plug-in (named by its
        fault), or the walk itself; this cycle walks the ordering's whole order."""
        ordering = self.ordering
        if not isinstance(ordering, SafeOrdering):
            return
        if isinstance(exc, PolicyFault) and exc.kind == "ordering":
            ordering.fail(exc.what)
            return
        what = str(exc) if isinstance(exc, PolicyFault) else f"raised {describe(exc)}"
        ordering.faults.append(
            f"lazy walk over the pending gangs failed: {what}; this cycle walks the "
            "ordering's whole order"
        )

    def _visit(self, gang: Gang, placer: Placer, ctx: CycleContext, result: CycleResult) -> None:
        """Decide one gang drawn from the order (or skip it on a memo that still holds),
        through the guard: a fault of this gang or a plug-in leaves it pending."""
        state = self.state
        uid = gang.uid
        if uid in ctx.ledger.evicted or uid not in state.pending:
            return
        result.considered += 1
        decision = self._guard.decide(ctx.ledger, gang, self._consider, placer, ctx, result)
        if decision is None:
            self.ordering.observe(gang, False)
            return
        if isinstance(decision, str):
            decision = Decision(uid, Outcome.PENDING, decision)
        self.ordering.observe(gang, decision.outcome is Outcome.ADMITTED)
        if decision.outcome is Outcome.ADMITTED:
            self.reasons.pop(uid, None)
            self._failed_gangs.pop(uid, None)
            result.decisions.append(decision)
        elif self.reasons.get(uid) != decision.reason:
            self.reasons[uid] = decision.reason
            result.decisions.append(decision)
        self._note_discord(uid)

    def _consider(
        self, gang: Gang, placer: Placer, ctx: CycleContext, result: CycleResult
    ) -> Decision | None:
        """Decide one gang, or None when a recorded failure still holds (skipped)."""
        memo = self._failed_gangs.get(gang.uid)
        if memo is not None and self._still_fails(memo, gang):
            if memo.kind in ("queue", "never") or not self.preemption.could_help(self.state, gang):
                result.skipped += 1
                return None
            first = Decision(gang.uid, Outcome.PENDING, memo.reason)
            return self._preempt(gang, self.plan(gang), placer, ctx, result, first)
        return self._decide(gang, placer, ctx, result)

    # ---- the lazy walk over groups of alike gangs (see backlog.py) ---------------------
    def _follow_pending(self) -> set[str]:
        """Uids whose pending entry changed since the last cycle."""
        if self._journal is None or self._journal_state is not self.state:
            self._journal = self.state.pending_journal()
            self._journal_state = self.state
            self._backlog = None
        return self._journal.drain()

    def _backlog_for(self, changed: set[str]) -> Backlog | None:
        """The group index when the walk may be lazy: the ordering is a sort by a key of
        the gang alone (`KeyedOrdering`) and the preemption policy says which gangs
        `could_help` answers alike for (`help_key`). None: walk the ordering's whole order."""
        assert self._raw is not None
        ordering, preemption = self._raw  # the policies themselves, not guarded stand-ins
        key = getattr(ordering, "static_key", None)
        alike = help_key(preemption)
        pending = len(self.state.pending)
        if (
            self.walk_all
            or key is None
            or alike is None
            or pending < self.lazy_below
            or (self._backlog is None and pending < self.lazy_from)
        ):
            self._backlog = None
            return None
        helping = not isinstance(preemption, NoPreemption)
        backlog = self._backlog
        if backlog is None or backlog.owner is not ordering or self._grouped_by != alike:
            self._helping, self._grouped_by = helping, alike
            self._help_ids.clear()
            backlog = self._backlog = Backlog(
                self.state, ordering, _checked_key(ordering, key), self._group_of
            )
            backlog.dormant_wanted = helping
            backlog.sync(self.state.pending)
        else:
            backlog.sync(changed)
        return backlog

    def _group_of(self, gang: Gang) -> GroupKey:
        help_id = 0
        if self._helping and self._grouped_by is not None:
            try:
                alike: Hashable = self._grouped_by(gang)
            except Exception:  # a faulty key: the gang is a class of its own
                alike = ("gang", gang.uid)
            help_id = self._help_ids.setdefault(alike, len(self._help_ids))
        return (gang.queue, gang.namespace, self.plan(gang).shape_id, help_id)

    def _walk_groups(
        self, backlog: Backlog, placer: Placer, ctx: CycleContext, result: CycleResult
    ) -> None:
        """The order's gangs, awake group heads merged by key; a group whose gang failed
        for a reason the whole group shares (queue, quota lower bound, placement), and
        for which no victims will be searched, is not walked further this cycle, and
        sleeps if its shape needs devices not free.

        With preemption, a gang left out would still search victims if its queue was not
        searched yet and `could_help` said yes. So groups left out (asleep, or stopped
        because `could_help` said no) are walked, too, while the policy says yes for
        their class: from the start, and after an admission or release from the gang
        after the current one. Such a group is passed over, unvisited, once its queue
        was searched or the policy says no. After an eviction (capacity grew) groups
        that may fit now resume as well. Newcomers left unwalked are told their group's
        reason."""
        state = self.state
        self._help_cache.clear()
        self._help_reps.clear()
        self._help_stamps.clear()
        self._classes_of.clear()
        assert self._raw is not None
        if self._help_owner is None or (
            self._help_owner[0] is not backlog or self._help_owner[1] is not self._raw[1]
        ):  # classes are numbered per backlog; answers are the policy's
            self._help_kept.clear()
            self._queue_helped.clear()
            self._help_owner = (backlog, self._raw[1])
        helped_before = _Helped()
        """Classes `could_help` said yes for at the last asking: their groups left out
        are in the walk already."""
        if self._helping:
            self._helped_classes(backlog, helped_before)
        hold = None
        if self.hold_quota and self._helping:
            hold = partial(self._held_rooms, backlog)
        backlog.start_cycle(hold)
        held = backlog.held
        searched_seen: set[str] = set()
        gates: dict[Room, _HeldGate] = {}
        through_gates: set[GroupKey] = set()
        """Groups a gate put in the walk."""
        reopen = False
        passed: set[GroupKey] = set()
        """Held groups whose turn passed out of the walk."""
        if self.copy_dormant:
            walk = Frontier(backlog.heads())
            for cls in backlog.classes:
                if cls in helped_before:
                    groups = backlog.classes[cls] - backlog.awake
                    walk.push_conditional((backlog.head(w), w) for w in groups)
        else:
            dormant = backlog.dormant
            walk = Frontier(
                backlog.heads(),
                {cls: dormant[cls] for cls in helped_before if cls in dormant},
                backlog.dormant_at,
                backlog.woke,
            )
        stopped: dict[GroupKey, Gang] = {}
        visited: set[str] = set()
        seen = (state.admission_generation, state.capacity_epoch)
        if held:  # held groups out of the walk: of classes preemption does not help
            start: Entry = ((), "")
            for room in held:
                if not all(c in helped_before for c in self._classes_of.get(room[0], ())):
                    gates[room] = _HeldGate(room, start)
            if gates:
                self._open_gates(backlog, walk, gates, through_gates, passed)
        while (position := walk.pop(self._searched_queues)) is not None:
            entry, where, maybe = position
            if held and backlog.is_held(where):  # its turn, as woken at the start
                gang = state.pending.get(entry[1])
                memo = self._moot(backlog, where, gang) if gang is not None else None
                if (
                    gang is not None
                    and memo is not None
                    and self._leaves(backlog, where, gang, memo)
                ):
                    visited.add(gang.uid)  # passed as decided: it falls asleep again
                    stopped[where] = gang
                    backlog.fell_asleep(where)
                    continue
                backlog.wake_held(where)
                maybe = False
            if maybe and not self._class_helped(backlog, (where[0], where[3])):
                continue  # it fails as it did, and searches no victims
            gang = state.pending.get(entry[1])
            if gang is not None:
                visited.add(gang.uid)
                memo = self._moot(backlog, where, gang)
                if memo is not None:  # passed as decided: nothing changed
                    if self._leaves(backlog, where, gang, memo):
                        stopped[where] = gang
                        self._sleep(backlog, where, gang, memo)
                    elif (following := backlog.after(where, entry)) is not None:
                        walk.push((following, where))
                    continue
                self._visit(gang, placer, ctx, result)
                if held and len(self._searched_queues) != len(searched_seen):
                    for queue in sorted(self._searched_queues - searched_seen):
                        self._release_held(backlog, walk, queue, entry, gates)
                    searched_seen.update(self._searched_queues)
                    reopen = True
            now = (state.admission_generation, state.capacity_epoch)
            changed = self._helping and now != seen
            if changed:
                self._help_cache.clear()
                self._help_stamps.clear()
            still = gang if gang is not None and gang.uid in state.pending else None
            memo = self._failed_gangs.get(still.uid) if still is not None else None
            if still is not None and memo is not None and self._leaves(backlog, where, still, memo):
                stopped[where] = still
                self._sleep(backlog, where, still, memo)
            elif (following := backlog.after(where, entry)) is not None:
                walk.push((following, where))
            if gates and (reopen or now != seen or where in through_gates):
                reopen = False
                for gate in gates.values():
                    gate.after = entry
                self._open_gates(backlog, walk, gates, through_gates, passed)
            if changed:
                sure, helped = self._resumed(
                    backlog, stopped, walk, helped_before, now[1] != seen[1], entry
                )
                if held and now[1] != seen[1] and backlog.raised:  # behind cursors, or gates
                    for amount, w in backlog.raised:
                        if not backlog.is_held(w):
                            continue
                        room = backlog.short_of_quota[w][0]
                        if room in gates:
                            gates[room].add(amount, backlog.head(w), w)
                        elif w[0] in self._searched_queues:
                            gates[room] = _HeldGate(room, entry)
                            gates[room].add(amount, backlog.head(w), w)
                    self._open_gates(backlog, walk, gates, through_gates, passed)
                walk.certain(sure)
                for w in sorted(sure | helped):
                    if walk.is_queued(w):
                        continue
                    if (following := backlog.after(w, entry)) is not None:
                        walk.push((following, w), conditional=w not in sure)
                seen = now
        for uid in sorted(backlog.fresh - visited):
            member = state.pending.get(uid)
            if member is None:
                continue
            where = backlog.place[uid][0]
            head = stopped.get(where)
            if head is None and held and (where in passed or backlog.is_held(where)):
                head = state.pending.get(backlog.head(where)[1])  # its turn passed it
            reason = self._group_reason(member, head)
            if reason is not None and self.reasons.get(uid) != reason:
                self.reasons[uid] = reason
                self._note_discord(uid)
                result.decisions.append(Decision(uid, Outcome.PENDING, reason))
        backlog.fresh.clear()

    def _held_rooms(self, backlog: Backlog) -> dict[Room, int]:
        """The rooms to hold at the start of the cycle (`Backlog.start_cycle`), with their
        room now: every room some group sleeps on. A held group of a class preemption may
        help is then in the walk behind its class's cursor, walked in case preemption
        helps it, which is what its turn would do while its queue is not searched; the
        walk wakes it at its turn when that turn would not pass it as decided. Those its
        turn would not pass while out of the walk (of a class preemption does not help at
        the start, or of a searched queue: `_release_held`) come in through a gate per
        room (`_HeldGate`, `_open_gates`): those with room at their turn; a turn without
        room passes them as decided (their failure holds, and no victims are searched
        for them, their class not helped)."""
        quota = self.state.quota
        rooms: dict[Room, int] = {}
        for room in backlog.quota_rooms():
            have = quota.headroom(*room)[0]
            if have is not None:
                rooms[room] = have
        return rooms

    def _release_held(
        self,
        backlog: Backlog,
        walk: Frontier,
        queue: str,
        entry: Entry,
        gates: dict[Room, _HeldGate],
    ) -> None:
        """The queue was just searched: its held groups whose turn is still to come leave
        the walk with its classes' cursors, except those its turn would not pass as
        decided: those with a reason to tell again (`_discordant`) are put in the walk for
        good, and those with room at their turn come through a gate per room
        (`_HeldGate`, `_open_gates`)."""
        for room in backlog.held:
            if room[0] == queue:
                gates[room] = _HeldGate(room, entry)
        for uid in sorted(self._discordant):
            at = backlog.place.get(uid)
            if at is None or at[0][0] != queue or not backlog.is_held(at[0]):
                continue
            head = backlog.head(at[0])
            if head[1] == uid and head > entry:
                self._walk_for_good(walk, at[0], head)

    def _open_gates(
        self,
        backlog: Backlog,
        walk: Frontier,
        gates: dict[Room, _HeldGate],
        through: set[GroupKey],
        passed: set[GroupKey],
    ) -> None:
        """Put in the walk each gate's first held group the room has room for now, whose
        turn is still to come (the walk's entry is every gate's `after`); called after
        the room may have grown, and after such a group's turn. A gate whose room is
        the same as at its last `first` is asked again only once the group that `first`
        found had its turn: had it found none, every held group with room enough was
        taken or had passed then (no group joined since, or its `add` would have reset
        `have`), and asking again would find none and mark none passed."""
        quota = self.state.quota
        for room, gate in gates.items():
            have = quota.headroom(*room)[0]
            if have == gate.have and (gate.through is None or gate.through[0] > gate.after):
                continue  # the same room, and no first, or its turn is still to come
            gate.have = have
            first = gate.first(have, backlog, passed)
            gate.through = first
            if first is not None:
                through.add(first[1])
                self._walk_for_good(walk, first[1], first[0])

    @staticmethod
    def _walk_for_good(walk: Frontier, where: GroupKey, head: Entry) -> None:
        if not walk.is_queued(where):
            walk.push((head, where))
        elif walk.is_maybe(where):
            walk.certain((where,))

    def _note_discord(self, uid: str) -> None:
        memo = self._failed_gangs.get(uid)
        if memo is not None and memo.kind == "quota" and self.reasons.get(uid) != memo.reason:
            self._discordant.add(uid)
        else:
            self._discordant.discard(uid)

    def _moot(self, backlog: Backlog, where: GroupKey, gang: Gang) -> _Memo | None:
        """The gang's recorded failure if deciding the gang now would change nothing, so
        the walk passes it as decided (None: decide it): its recorded failure still holds
        and no victims would be searched for it (its failure is its queue's or can never
        pass, or `could_help` says no for its class: it is skipped), or its queue was
        searched and the failure's reason is the one it was last told. Common after
        capacity grew: groups woken for room that gangs before them took again."""
        memo = self._failed_gangs.get(gang.uid)
        if memo is None or not self._still_fails(memo, gang):
            return None
        if memo.kind in ("queue", "never") or not self._helping:
            return memo
        if gang.queue in self._searched_queues:
            return memo if self.reasons.get(gang.uid) == memo.reason else None
        return None if self._class_helped(backlog, (where[0], where[3])) else memo

    def _leaves(self, backlog: Backlog, where: GroupKey, gang: Gang, memo: _Memo) -> bool:
        """Whether the rest of the pending gang's group would fail as it did (`memo`, its
        recorded failure) and search no victims: its failure holds for the group, and no
        victims are searched for it (its queue was searched, or `could_help` says no for
        its class)."""
        if not self._fails_for_group(gang, memo):
            return False
        if not self._helping or memo.kind in ("queue", "never"):
            return True
        return not self._class_helped(backlog, (where[0], where[3]))

    def _class_helped(self, backlog: Backlog, cls: HelpClass) -> bool:
        """Whether a gang of the class that fails now would search victims: its queue
        was not searched yet and `could_help` says yes (asked of one member for all, once
        per state; a fault counts as yes, so that a visit reports it)."""
        if cls[0] in self._searched_queues:
            return False
        hit = self._help_cache.get(cls)
        if hit is None:
            state = self.state
            member = self._help_reps.get(cls)
            if member is None:
                uid = backlog.groups[next(iter(backlog.classes[cls]))][0][1]
                member = state.pending.get(uid) or state.admitted_gangs.get(uid)  # or it left
                if member is not None:
                    self._help_reps[cls] = member
            assert self._raw is not None
            stamp = self._help_stamp(cls[0])
            kept = self._help_kept.get(cls)
            if stamp is not None and kept is not None and kept[0] is stamp:
                hit = kept[1]
            else:
                try:
                    hit = member is None or self._raw[1].could_help(state, member)
                except Exception:
                    hit, stamp = True, None
                if stamp is not None and member is not None:
                    self._help_kept[cls] = (stamp, hit)
            self._help_cache[cls] = hit
        return hit

    def _helped_classes(self, backlog: Backlog, helped: _Helped) -> set[HelpClass]:
        """Bring `helped` to the classes `_class_helped` says yes for now, and return
        those it did not hold; a queue whose `help_stamp` is what it was when each of its
        classes was last asked answers as then (and is not looked at further when its
        answers are the ones `helped` holds already)."""
        if not self._classes_of:
            by_queue: dict[str, list[HelpClass]] = {}
            for cls in backlog.classes:
                by_queue.setdefault(cls[0], []).append(cls)
            self._classes_of = {q: tuple(classes) for q, classes in by_queue.items()}
        added: set[HelpClass] = set()
        for queue, classes in self._classes_of.items():
            if queue in self._searched_queues:
                helped.put(queue, _NONE, added)
                continue
            stamp = self._help_stamp(queue)
            kept = self._queue_helped.get(queue)
            if stamp is None or kept is None or not (kept[1] is classes or kept[1] == classes):
                kept = None
            elif kept[0] is stamp:
                if kept[1] is not classes:  # the same classes, in a later cycle
                    self._queue_helped[queue] = (stamp, classes, kept[2])
                helped.put(queue, kept[2], added)
                continue
            yes = None if kept is None else self._helped_since(backlog, classes, kept, stamp)
            if yes is None:
                yes = {cls for cls in classes if self._class_helped(backlog, cls)}
            helped.put(queue, yes, added)
            if stamp is not None and all(
                (k := self._help_kept.get(cls)) is not None and k[0] is stamp for cls in classes
            ):
                self._queue_helped[queue] = (stamp, classes, yes)
        return added

    def _helped_since(
        self,
        backlog: Backlog,
        classes: tuple[HelpClass, ...],
        kept: tuple[object, tuple[HelpClass, ...], set[HelpClass]],
        stamp: object,
    ) -> set[HelpClass] | None:
        """A queue's classes helped now, from those helped under its kept stamp: the
        classes of the keys whose answers the policy says may differ since
        (`help_changed`) are asked again, the others keep their answers under the new
        stamp. None: the policy cannot say (or failed)."""
        assert self._raw is not None
        changed_of = help_changed(self._raw[1])
        if changed_of is None:
            return None
        try:
            keys = changed_of(kept[0], stamp)
        except Exception:
            return None
        if keys is None:
            return None
        ids = {self._help_ids[k] for k in keys if k in self._help_ids}
        before = kept[2]
        yes: set[HelpClass] = set()
        for cls in classes:
            if cls[1] in ids:
                hit = self._class_helped(backlog, cls)
            else:
                hit = cls in before
                self._help_kept[cls] = (stamp, hit)
                self._help_cache[cls] = hit
            if hit:
                yes.add(cls)
        return yes

    def _help_stamp(self, queue: str) -> object | None:
        """The preemption policy's `help_stamp` of the queue in this state (None: it
        declares none, or it failed)."""
        if queue in self._help_stamps:
            return self._help_stamps[queue]
        assert self._raw is not None
        stamp_of = help_stamp(self._raw[1])
        stamp = None
        if stamp_of is not None:
            try:
                stamp = stamp_of(self.state, queue)
            except Exception:
                stamp = None
        self._help_stamps[queue] = stamp
        return stamp

    def _resumed(
        self,
        backlog: Backlog,
        stopped: dict[GroupKey, Gang],
        walk: Frontier,
        helped_before: _Helped,
        grew: bool,
        turn: Entry,
    ) -> tuple[set[GroupKey], set[GroupKey]]:
        """After an admission or release: the groups that may fit now (after capacity
        grew: woken sleepers, stopped groups that do not sleep), and the groups off the
        walk of the classes preemption may help now and did not before (a group of a
        class it helped is left out only for a reason no preemption changes: its queue
        was searched, or its failure is its queue's or can never pass)."""
        sure: set[GroupKey] = set()
        if grew:
            sure.update(backlog.wake(turn=turn))
            sure.update(w for w, g in stopped.items() if self._may_fit_again(backlog, w, g))
        helped: set[GroupKey] = set()
        for cls in self._helped_classes(backlog, helped_before):
            helped.update(w for w in backlog.classes[cls] if not walk.is_queued(w))
        return sure, helped

    def _may_fit_again(self, backlog: Backlog, where: GroupKey, gang: Gang) -> bool:
        memo = self._failed_gangs.get(gang.uid)
        if memo is None or memo.kind in ("queue", "never"):
            return False
        return where[2] not in backlog.asleep and where not in backlog.short_of_quota

    def _sleep(self, backlog: Backlog, where: GroupKey, gang: Gang, memo: _Memo) -> None:
        """Put the group (or its whole shape) to sleep if its failure (`memo`) waits for a
        known amount: free devices to host its pods, or quota headroom."""
        if memo.kind == "placement":
            short = shortfall(self.state.inventory, self.plan(gang))
            if short is not None:
                backlog.sleep(where[2], *short)
        elif memo.kind == "quota":
            assert isinstance(memo.stamp, tuple)
            resource, amount = memo.stamp
            sure = where in backlog.groups and backlog.head(where)[1] == gang.uid
            backlog.sleep_on_quota(where, (gang.queue, str(resource)), int(amount), sure)

    def _fails_for_group(self, gang: Gang, memo: _Memo) -> bool:
        """Whether the pending gang's recorded failure (`memo`) holds for its whole group
        now."""
        if memo.gang is not gang:
            return False
        if memo.kind == "quota":
            shape = self.plan(gang).shape_id
            exact = self._exact_charge.get(shape)
            if exact is None:
                exact = self._exact_charge[shape] = charge_is_exact(gang)
            return exact
        return memo.kind in ("queue", "placement", "never")

    def _group_reason(self, member: Gang, head: Gang | None) -> str | None:
        """What deciding `member` would have said: its group's `head` failed this cycle
        (None: its shape sleeps, it failed placement earlier)."""
        memo = self._failed_gangs.get(head.uid) if head is not None else None
        if memo is not None and memo.kind != "placement":
            return memo.reason
        shape = self._failed_shapes.get(self.plan(member).shape_id)
        if shape is None:
            return memo.reason if memo is not None else None
        if shape.gang.uid == member.uid:
            return shape.reason
        return f"{shape.reason} (same shape as gang {shape.gang.uid})"

    def _forget_gone(self, changed: set[str]) -> None:
        """Keep memo tables proportional to the backlog: drop what no pending gang needs."""
        state = self.state
        tables = (self._plans, self.reasons, self._failed_gangs, self._failed_preemption)
        for uid in changed:
            if uid not in state.pending:
                for table in tables:
                    table.pop(uid, None)
                self._discordant.discard(uid)
        pending = len(state.pending)
        for table in tables:
            if len(table) > 2 * pending + 1024:  # entries not made for pending gangs
                for uid in [u for u in table if u not in state.pending]:
                    del table[uid]
        if len(self._shape_ids) > 2 * pending + 1024:
            self._shape_ids.clear()
            self._failed_shapes.clear()
            self._exact_charge.clear()
            self._plans.clear()
            self._help_ids.clear()
            self._backlog = None  # its groups are keyed by shape ids

    def _still_fails(self, memo: _Memo, gang: Gang) -> bool:
        """True while nothing changed that could let the recorded failure pass.

        A queue problem holds until queues or namespaces change; a quota refusal while
        the refused resource still has less room than needed and the queue is usable; a
        placement failure until capacity grows anywhere.
        """
        state = self.state
        if memo.gang is not gang:
            return False
        if memo.kind == "quota":
            assert isinstance(memo.stamp, tuple)
            resource, needed = memo.stamp
            room, _ = state.quota.headroom(gang.queue, str(resource))
            # The queue may have become unusable since (deleted, namespace refused).
            return room is not None and room < needed and state.queue_blocker(gang) is None
        if memo.kind == "queue":
            return memo.stamp == (state.quota.generation, state.namespace_generation)
        return memo.stamp == self._placement_stamp()

    def _placement_stamp(self) -> tuple[int, int, int]:
        """Placement holds until capacity grows; queue changes refresh the reason too."""
        state = self.state
        return (state.capacity_epoch, state.quota.generation, state.namespace_generation)

    def _fail(
        self, kind: str, gang: Gang, reason: str, stamp: object = None, attempts: int = 0
    ) -> Decision:
        state = self.state
        if kind == "queue":
            stamp = (state.quota.generation, state.namespace_generation)
        elif kind in ("placement", "never"):
            stamp = self._placement_stamp()
        self._failed_gangs[gang.uid] = _Memo(kind, stamp, gang, reason)
        return Decision(gang.uid, Outcome.PENDING, reason, attempts=attempts)

    def _decide(
        self, gang: Gang, placer: Placer, ctx: CycleContext, result: CycleResult
    ) -> Decision:
        state = self.state
        blocker = state.queue_blocker(gang)
        if blocker is not None:
            return self._fail("queue", gang, blocker)
        plan = self.plan(gang)
        shape = self._failed_shapes.get(plan.shape_id)
        if shape is not None and shape.stamp == self._placement_stamp():
            result.skipped += 1
            reason = shape.reason
            if shape.gang.uid != gang.uid:
                reason = f"{reason} (same shape as gang {shape.gang.uid})"
            first = self._fail("placement", gang, reason)
        else:
            first = self._try(gang, plan, placer, ctx.ledger, result, [])
            if first.outcome is Outcome.ADMITTED:
                return first
        if (never := self.never_fit.reason(state, gang)) is not None:
            return self._fail("never", gang, never)
        if not self.preemption.could_help(state, gang):
            return first
        return self._preempt(gang, plan, placer, ctx, result, first)

    def _preempt(
        self,
        gang: Gang,
        plan: GangPlan,
        placer: Placer,
        ctx: CycleContext,
        result: CycleResult,
        first: Decision,
    ) -> Decision:
        """Search victims for a gang that does not fit, unless that is known to fail."""
        state = self.state
        if gang.queue in self._searched_queues:
            return first
        memo = self._failed_preemption.get(gang.uid)
        if memo is not None and memo.gang is gang and self._preemption_still_fails(memo):
            self._searched_queues.add(gang.queue)  # as if searched: memos change no answer
            return replace(first, reason=memo.reason)
        result.preemption_searches += 1
        ledger = ctx.ledger
        try:
            named = self.preemption.victims(ctx, gang, first.reason)
            taken = ctx.take(gang, named)
        finally:
            if ctx.kept():  # not handed over (or a fault): the state as before the search
                ctx.settle()
        if taken is not None:  # the search's probe placed it with these victims evicted
            pods, released = taken
            result.placements_tried += 1
            self._failed_preemption.pop(gang.uid, None)
            evicted = ledger.adopt(released)
            return self._admit(ledger, gang, pods, reservation_charge(pods), evicted, 1)
        victims = [v for v in named if ctx.evictable(v)]
        if victims:
            evicted = ledger.evict(victims)
            second = self._try(gang, plan, placer, ledger, result, evicted)
            if second.outcome is Outcome.ADMITTED:
                self._failed_preemption.pop(gang.uid, None)
                return second
            ledger.unrestorable.extend(ledger.restore(evicted))
            first = replace(
                first, reason=f"{first.reason}; evicting {', '.join(victims)} would not be enough"
            )
        self._searched_queues.add(gang.queue)
        retry = getattr(self.preemption, "retry_at", None)
        until = retry(state, gang) if retry is not None else None
        if until is not None:
            result.wake_at = until if result.wake_at is None else min(result.wake_at, until)
        if not ledger.open_uids():
            # Gangs admitted earlier in this cycle could not be victims; once committed
            # they can, and no counter moves at commit: such a failure is not remembered.
            stamp = (self._placement_stamp(), state.admission_generation, until)
            self._failed_preemption[gang.uid] = _Memo("preempt", stamp, gang, first.reason)
        return first

    def _preemption_still_fails(self, memo: _Memo) -> bool:
        """Victims are the same while nobody was admitted or released, capacity and
        queues did not change, and no protection the policy reported has ended."""
        state = self.state
        assert isinstance(memo.stamp, tuple)
        placement, generation, until = memo.stamp
        return (
            placement == self._placement_stamp()
            and generation == state.admission_generation
            and (until is None or state.now < until)
        )

    def _try(
        self,
        gang: Gang,
        plan: GangPlan,
        placer: Placer,
        ledger: Ledger,
        result: CycleResult,
        evicted: list[tuple[Gang, Reservation]],
    ) -> Decision:
        state = self.state
        short = state.quota.check(gang.queue, plan.minimum_charge)
        if short is not None:
            return self._fail("quota", gang, short.message, (short.resource, short.would_use))
        outcome: PlacementOutcome = placer.place(plan, device_budget(state.quota, gang.queue, plan))
        result.placements_tried += 1
        if outcome.pods is None:
            if not evicted:
                self._failed_shapes[plan.shape_id] = _Memo(
                    "placement", self._placement_stamp(), gang, outcome.reason
                )
            return self._fail("placement", gang, outcome.reason, attempts=outcome.attempts)
        charge = reservation_charge(outcome.pods)
        short = state.quota.check_placed(gang.queue, charge, plan.minimum_charge)
        if short is not None:
            for pod in reversed(outcome.pods):
                state.release_pod(gang.uid, pod)
            return self._fail(
                "quota", gang, short.message, (short.resource, short.would_use), outcome.attempts
            )
        return self._admit(ledger, gang, outcome.pods, charge, evicted, outcome.attempts)

    @staticmethod
    def _admit(
        ledger: Ledger,
        gang: Gang,
        pods: tuple[PodPlacement, ...],
        charge: dict[str, int],
        evicted: list[tuple[Gang, Reservation]],
        attempts: int,
    ) -> Decision:
        """Admit the gang with its pods (applied) in the ledger."""
        reservation = ledger.admit(gang, pods, charge, evicted)
        return Decision(
            gang.uid,
            Outcome.ADMITTED,
            f"admitted to queue {gang.queue} on {len({p.node for p in pods})} nodes",
            reservation,
            tuple(g.uid for g, _ in evicted),
            attempts,
        )


_NONE: frozenset[HelpClass] = frozenset()


class _Helped(set[HelpClass]):
    """The classes preemption helps, as the union of each queue's (a class is of one
    queue): `put` replaces one queue's part, in place."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: dict[str, AbstractSet[HelpClass]] = {}

    def put(self, queue: str, yes: AbstractSet[HelpClass], added: set[HelpClass]) -> None:
        """Make `yes` the queue's part, adding to `added` the classes new to it."""
        old = self.parts.get(queue, _NONE)
        if yes is old:
            return
        self.parts[queue] = yes
        if old:
            self.difference_update(old - yes)
        new = yes - old if old else yes
        self.update(new)
        added.update(new)


class _HeldGate:
    """The held groups of one room (of a searched queue, or one with a class preemption
    did not help at the cycle's start), by amount, each amount's by turn:
    `first` finds the first one with room enough in O(amounts), however many there are,
    and in O(log amounts) while none of the room's sleepers changed (`Backlog.changes`)
    and the walk did not reach the first it found. Built when the room first has room for
    its smallest sleeper (until then none of them could be found)."""

    __slots__ = (
        "after",
        "amounts",
        "at",
        "best",
        "built",
        "checked",
        "have",
        "room",
        "stamp",
        "through",
        "turns",
    )

    def __init__(self, room: Room, after: Entry) -> None:
        self.room = room
        self.built = False
        self.amounts: list[int] = []
        self.turns: list[list[tuple[Entry, GroupKey]]] = []
        self.at: list[int] = []
        self.after = after
        """The walk's entry: turns up to it have passed."""
        self.have: int | None = -1
        """The room at the last `first`."""
        self.through: tuple[Entry, GroupKey] | None = None
        """What the last `first` found (put in the walk)."""
        self.checked = 0
        """The amounts (the first `checked` of `amounts`) whose next turn (`at`) is of a
        group held when the room's sleepers were as `stamp` says, its turns before that
        passed or not held."""
        self.stamp = -1
        """`Backlog.changes` of the room when `checked` was last true."""
        self.best: list[tuple[Entry, GroupKey] | None] = []
        """Per checked amount, the first of the next turns of it and smaller amounts."""

    def _build(self, backlog: Backlog) -> None:
        head = backlog.head
        held = sorted(
            [(amount, head(where), where) for amount, where in backlog.held_of(self.room)]
        )
        for amount, entry, where in held:
            if not self.amounts or self.amounts[-1] != amount:
                self.amounts.append(amount)
                self.turns.append([])
            self.turns[-1].append((entry, where))
        self.at = [0] * len(self.amounts)
        self.built = True

    def add(self, amount: int, head: Entry, where: GroupKey) -> None:
        """A group held since the gate was built (its turn after `after`)."""
        self.have = -1  # look again
        if not self.built:
            return  # the build will find it
        self.checked = 0
        k = bisect_left(self.amounts, amount)
        if k == len(self.amounts) or self.amounts[k] != amount:
            self.amounts.insert(k, amount)
            self.turns.insert(k, [])
            self.at.insert(k, 0)
        turns = self.turns[k]
        i = bisect_left(turns, (head, where))
        turns.insert(i, (head, where))
        self.at[k] = min(self.at[k], i)

    def first(
        self, have: int | None, backlog: Backlog, passed: set[GroupKey]
    ) -> tuple[Entry, GroupKey] | None:
        """The first turn to come of a group still held whose amount is at most `have`.
        Held groups whose turn passed meanwhile (out of the walk: no room for them then)
        fell asleep again at it, as their turn would have had them (`passed`).

        The amounts checked since the room's sleepers last changed are looked at again
        only if the first of their next turns passed: until then none of their groups
        can have passed, and each next turn is still of a held group."""
        if not self.built:
            least = backlog.least_amount(self.room)
            if least is None or (have is not None and have < least):
                return None
            self._build(backlog)
        amounts = self.amounts
        upto = len(amounts) if have is None else bisect_right(amounts, have)
        if not upto:
            return None
        if backlog.changes.get(self.room, 0) != self.stamp:
            self.checked = 0
        elif self.checked:
            best = self.best[min(self.checked, upto) - 1]
            if best is not None and best[0] <= self.after:
                self.checked = 0  # a next turn passed: look at every amount again
            elif self.checked >= upto:
                return best
        if upto > self.checked:
            self._check(self.checked, upto, backlog, passed)
        return self.best[upto - 1]

    def _check(self, start: int, upto: int, backlog: Backlog, passed: set[GroupKey]) -> None:
        """Bring the next turns of amounts `start` to `upto` up to date (`start`: those
        before are)."""
        bests = self.best
        del bests[start:]
        best = bests[-1] if bests else None
        for k in range(start, upto):
            turns, i = self.turns[k], self.at[k]
            while i < len(turns):
                head, where = turns[i]
                if backlog.is_held(where):
                    if head > self.after:
                        break
                    backlog.fell_asleep(where)
                    passed.add(where)
                i += 1
            self.at[k] = i
            if i < len(turns):
                backlog.watched.add(turns[i][1])
                if best is None or turns[i] < best:
                    best = turns[i]
            bests.append(best)
        self.checked = upto
        self.stamp = backlog.changes.get(self.room, 0)


def _checked_key(
    ordering: object, key: Callable[[Gang], tuple[Any, ...]]
) -> Callable[[Gang], tuple[Any, ...]]:
    """The ordering's `static_key`, whose failure is a `PolicyFault` naming the gang."""

    def checked(gang: Gang) -> tuple[Any, ...]:
        try:
            return key(gang)
        except Exception as exc:
            what = f"static_key raised {describe(exc)} for gang {gang.uid}"
            raise PolicyFault("ordering", ordering, what) from exc

    return checked
