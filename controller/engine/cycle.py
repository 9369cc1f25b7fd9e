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
cycle's cost bounded by the number of queues rather than the backlog.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from controller.engine.context import CycleContext
from controller.engine.ledger import Ledger
from controller.engine.model import Gang
from controller.engine.placement import GangPlan, PlacementOutcome, Placer, reservation_charge
from controller.engine.policy import (
    BinPack,
    FifoWithinPriority,
    NoPreemption,
    OrderingPolicy,
    PlacementPolicy,
    PreemptionPolicy,
)
from controller.engine.reservation import Reservation
from controller.engine.state import ClusterState


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
    _plans: dict[str, GangPlan] = field(default_factory=dict)
    _shape_ids: dict[object, int] = field(default_factory=dict)
    _failed_shapes: dict[int, _Memo] = field(default_factory=dict)
    _failed_gangs: dict[str, _Memo] = field(default_factory=dict)
    _failed_preemption: dict[str, _Memo] = field(default_factory=dict)
    _searched_queues: set[str] = field(default_factory=set)

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

        `now` sets the state's clock first (waiting times, attained service).
        """
        state = self.state
        if now is not None:
            state.now = now
        ledger = Ledger(state)
        placer = Placer(state, self.placement, self.search_bound)
        ctx = CycleContext(state, ledger, placer, self.plan)
        result = CycleResult([], ledger)
        failed = self._failed_gangs
        observe = self.ordering.observe
        could_help = self.preemption.could_help
        self._searched_queues.clear()
        for gang in self.ordering.order(ctx):
            uid = gang.uid
            if uid in ledger.evicted or uid not in state.pending:
                continue
            result.considered += 1
            memo = failed.get(uid)
            if memo is not None and self._still_fails(memo, gang):
                if memo.kind == "queue" or not could_help(state, gang):
                    result.skipped += 1
                    observe(gang, False)
                    continue
                first = Decision(uid, Outcome.PENDING, memo.reason)
                decision = self._preempt(gang, self.plan(gang), placer, ctx, result, first)
            else:
                decision = self._decide(gang, placer, ctx, result)
            observe(gang, decision.outcome is Outcome.ADMITTED)
            if decision.outcome is Outcome.ADMITTED:
                self.reasons.pop(uid, None)
                failed.pop(uid, None)
                result.decisions.append(decision)
            elif self.reasons.get(uid) != decision.reason:
                self.reasons[uid] = decision.reason
                result.decisions.append(decision)
        self._forget_gone(len(state.pending))
        return result

    def _forget_gone(self, pending: int) -> None:
        """Keep memo tables proportional to the backlog: drop what no pending gang needs."""
        state = self.state
        for table in (self._plans, self.reasons, self._failed_gangs, self._failed_preemption):
            if len(table) > pending:
                for uid in [u for u in table if u not in state.pending]:
                    del table[uid]
        if len(self._shape_ids) > 2 * pending + 1024:
            self._shape_ids.clear()
            self._failed_shapes.clear()
            self._plans.clear()

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
        elif kind == "placement":
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
        victims = [v for v in self.preemption.victims(ctx, gang, first.reason) if ctx.evictable(v)]
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
        outcome: PlacementOutcome = placer.place(plan)
        result.placements_tried += 1
        if outcome.pods is None:
            if not evicted:
                self._failed_shapes[plan.shape_id] = _Memo(
                    "placement", self._placement_stamp(), gang, outcome.reason
                )
            return self._fail("placement", gang, outcome.reason, attempts=outcome.attempts)
        charge = reservation_charge(outcome.pods)
        short = state.quota.check(gang.queue, charge)
        if short is not None:
            for pod in reversed(outcome.pods):
                state.release_pod(gang.uid, pod)
            return self._fail(
                "quota", gang, short.message, (short.resource, short.would_use), outcome.attempts
            )
        reservation = ledger.admit(gang, outcome.pods, charge, evicted)
        return Decision(
            gang.uid,
            Outcome.ADMITTED,
            f"admitted to queue {gang.queue} on {len({p.node for p in outcome.pods})} nodes",
            reservation,
            tuple(g.uid for g, _ in evicted),
            outcome.attempts,
        )
