"""Preemption policies: which whole admitted gangs to evict so that a gang fits.

Each policy only decides who may be a victim (and in what order it prefers them); one
search, `minimal_victims`, then finds a small set with the engine's what-if probe and
never returns a set the probe says is not enough. Built against preemption loops:
`priority` and `cost-aware` only evict strictly lower priority; `reclaim` only takes
what queues borrow of the resources the gang needs while the preemptor stays within its
nominal quota (so total borrowing falls); `fair-share` only takes from queues whose
share the eviction lowers and that stay at or above the preemptor's (or, under
LessThanInitialShare, at their nominal quota, and never a gang preempted before), and
its own-queue evictions never raise its share. tests/unit/policies/test_preemption_loops
drives contention episodes to a fixed point.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, NamedTuple

from controller.engine.context import CycleContext
from controller.engine.model import Gang
from controller.engine.placement import minimum_charge
from controller.engine.policy import NoPreemption
from controller.engine.reservation import Reservation
from controller.engine.state import AdmissionChange, AdmissionJournal, ClusterState
from policies.prefix import device_floor, devices_needed, free_devices, shortest_prefix
from policies.registry import builtin
from policies.shares import (
    Climb,
    Delta,
    climb,
    dominant_share,
    pools_after,
    share_of_pool,
    terms_share,
)

Scope = Literal["queue", "cluster"]
FINAL, INITIAL = "LessThanOrEqualToFinalShare", "LessThanInitialShare"
Strategy = Literal["LessThanOrEqualToFinalShare", "LessThanInitialShare"]
Cost = Callable[[Gang], float]
Admissible = Callable[[Sequence[Gang]], list[Gang]]

builtin(NoPreemption)


# ---- what policies know about admitted gangs --------------------------------------------
class AdmittedIndex:
    """Admitted gangs per queue (and in all), with min-priority heaps, caught up from the
    state's admission journal: a catch-up costs what was admitted or released since the
    last one, not what runs. Released gangs are dropped from a heap when they surface at
    its top; the heaps are rebuilt once they hold four times what runs. (What-if probes
    release and restore gangs: the journal names them, and a gang found as it was is
    left as it is.)"""

    def __init__(self) -> None:
        self._state: ClusterState | None = None
        self._journal: AdmissionJournal | None = None
        self._seen: dict[str, Gang] = {}
        """Every gang admitted at the last catch-up, by uid."""
        self._members: dict[str, dict[str, Gang]] = {}
        """The gangs of `_seen` per queue (queues with none have no entry)."""
        self._sorted: dict[str | None, list[Gang]] = {}
        """`gangs` per queue (None: all), until the queue's members change."""
        self._held: dict[str, Reservation] = {}
        """The reservation of each gang of `_seen` at the last catch-up."""
        self._stamps: dict[str, object] = {}
        """`stamp` per queue, until its members or their reservations change."""
        self._heaps: dict[str | None, list[tuple[int, int, str, Gang]]] = {}
        self._entries = 0
        self._seq = itertools.count()

    def _sync(self, state: ClusterState) -> None:
        journal = self._journal
        if state is not self._state or journal is None:
            self._state, self._journal = state, state.admission_journal()
            self._seen, self._members, self._sorted = {}, {}, {}
            self._held, self._stamps = {}, {}
            self._heaps, self._entries = {}, 0
            journal = self._journal
        elif not journal.changed:
            return
        admitted, seen, members = state.admitted_gangs, self._seen, self._members
        cached, held, stamps = self._sorted, self._held, self._stamps
        changes = journal.drain()
        if changes is None:  # too much to list: look at everyone
            changes = {(uid, "", "") for uid in seen.keys() | admitted.keys()}
        for uid, _, _ in changes:
            gang = admitted.get(uid)
            old = seen.get(uid)
            if old is gang:  # as it was (restored, or a change listed twice)
                if gang is not None and held[uid] is not (res := state.admitted[uid]):
                    held[uid] = res
                    stamps.pop(gang.queue, None)
                continue
            cached.pop(None, None)
            if old is not None:
                del seen[uid], held[uid]
                mine = members[old.queue]
                del mine[uid]
                cached.pop(old.queue, None)
                stamps.pop(old.queue, None)
                if not mine:
                    del members[old.queue]
                    self._entries -= len(self._heaps.pop(old.queue, ()))
            if gang is not None:
                seen[uid], held[uid] = gang, state.admitted[uid]
                members.setdefault(gang.queue, {})[uid] = gang
                cached.pop(gang.queue, None)
                stamps.pop(gang.queue, None)
                self._push(gang)
        if self._entries > 4 * len(seen) + 64:
            self._heaps, self._entries = {}, 0
            for gang in seen.values():
                self._push(gang)

    def _push(self, gang: Gang) -> None:
        for key in (gang.queue, None):
            entry = (gang.priority, next(self._seq), gang.uid, gang)
            heapq.heappush(self._heaps.setdefault(key, []), entry)
            self._entries += 1

    def min_priority(self, state: ClusterState, queue: str | None) -> int | None:
        """Lowest priority admitted in `queue` (None: anywhere), or None if nobody runs."""
        self._sync(state)
        heap = self._heaps.get(queue)
        seen = self._seen
        while heap:
            prio, _, uid, gang = heap[0]
            if seen.get(uid) is gang:
                return prio
            heapq.heappop(heap)
            self._entries -= 1
        return None

    def gangs(self, state: ClusterState, queue: str | None) -> list[Gang]:
        """The gangs admitted in `queue` (None: anywhere), by uid."""
        self._sync(state)
        hit = self._sorted.get(queue)
        if hit is None:
            found = self._seen if queue is None else self._members.get(queue, {})
            hit = self._sorted[queue] = [found[uid] for uid in sorted(found)]
        return list(hit)

    def queues(self, state: ClusterState) -> list[str]:
        """Queues with admitted gangs, by name."""
        self._sync(state)
        return sorted(self._members)

    def stamp(self, state: ClusterState, queue: str) -> object:
        """The same object while the gangs admitted in `queue` and their reservations are
        (what a reader of their charges may keep what it took from them under)."""
        self._sync(state)
        hit = self._stamps.get(queue)
        if hit is None:
            hit = self._stamps[queue] = object()
        return hit


class BorrowingIndex:
    """Queues that borrow now, with the resources they borrow: caught up from the state's
    admission journal (a charge moves the charged queue's and its ancestors' pools), in
    full (O(queues)) when the queue tree changed. Read only; its order is not meaningful."""

    def __init__(self) -> None:
        self._state: ClusterState | None = None
        self._journal: AdmissionJournal | None = None
        self._generation = -1
        self._borrowing: dict[str, frozenset[str]] = {}

    def get(self, state: ClusterState) -> dict[str, frozenset[str]]:
        quota = state.quota
        journal = self._journal
        if state is not self._state or journal is None:
            self._state, journal = state, state.admission_journal()
            self._journal, self._generation = journal, -1
        if journal.changed or quota.generation != self._generation:
            changes = journal.drain()
            touched: Iterable[str]
            if changes is None or quota.generation != self._generation:
                self._generation, self._borrowing = quota.generation, {}
                touched = quota.names()
            else:
                touched = {name for _, _, charged in changes for name in quota.path(charged)}
            for name in touched:
                self._update(state, name)
        return self._borrowing

    def _update(self, state: ClusterState, name: str) -> None:
        quota = state.quota
        borrowed = frozenset(r for r in quota.managed(name) if quota.borrowed(name, r))
        if borrowed and quota.get(name) is not None:
            self._borrowing[name] = borrowed
        else:
            self._borrowing.pop(name, None)


_Charge = tuple[Gang, dict[str, int], frozenset[str], tuple[tuple[str, int], ...]]


class ChargeCache:
    """`minimum_charge` per gang (and the resources it needs some of), kept while the
    gang object is the same."""

    def __init__(self) -> None:
        self._charges: dict[str, _Charge] = {}

    def entry(self, gang: Gang) -> _Charge:
        """(gang, charge, `needed`, `key`) at once."""
        hit = self._charges.get(gang.uid)
        if hit is None or hit[0] is not gang:
            if len(self._charges) > 65536:
                self._charges.clear()
            charge = minimum_charge(gang)
            hit = self._charges[gang.uid] = (
                gang,
                charge,
                frozenset(r for r, v in charge.items() if v),
                tuple(sorted(charge.items())),
            )
        return hit

    def __call__(self, gang: Gang) -> dict[str, int]:
        return self.entry(gang)[1]

    def needed(self, gang: Gang) -> frozenset[str]:
        """The resources the charge has a positive amount of."""
        return self.entry(gang)[2]

    def key(self, gang: Gang) -> tuple[tuple[str, int], ...]:
        """The charge as a sorted tuple: equal for gangs with equal charges."""
        return self.entry(gang)[3]


def _check_probes(max_probes: int) -> None:
    if max_probes < 1:
        raise ValueError(f"max_probes must be >= 1, got {max_probes}")


# ---- the shared search -----------------------------------------------------------------
_widths: dict[str, tuple[Reservation, int, int]] = {}


def _counted(state: ClusterState, uid: str) -> tuple[Reservation, int, int]:
    """(reservation, `width`, devices held) of an admitted gang, once per reservation."""
    res = state.admitted[uid]
    hit = _widths.get(uid)
    if hit is None or hit[0] is not res:
        if len(_widths) > 65536:
            _widths.clear()
        devices = res.device_count()
        hit = _widths[uid] = (res, devices or len(res.pods), devices)
    return hit


def width(state: ClusterState, uid: str) -> int:
    """What evicting an admitted gang frees: its devices (its pods if it has none);
    counted once per reservation."""
    return _counted(state, uid)[1]


def work_lost(state: ClusterState, uid: str, checkpoint: float | None) -> float:
    """Device-seconds an admitted gang would lose now: its run so far, or only what it
    ran since its last checkpoint (every `checkpoint` seconds from admission)."""
    res, freed, _ = _counted(state, uid)  # `width`, with the reservation
    ran = max(0.0, state.now - res.admitted_at)
    if checkpoint:
        ran -= math.floor(ran / checkpoint) * checkpoint
    return freed * ran


_minimum = ChargeCache()


def _too_few_devices(state: ClusterState, gang: Gang, pool: Sequence[Gang]) -> bool:
    """Whether even evicting all of `pool` cannot free the devices `gang` needs: saves
    the probes of the many gangs that wait for far more than lower priority holds."""
    need = devices_needed(_minimum(gang))
    uids = [c.uid for c in pool]
    held = partial(_held_devices, state)
    return device_floor(state, need, uids, free_devices(state), held) is None


def _held_devices(state: ClusterState, uid: str) -> int:
    """The devices an admitted gang holds, counted once per reservation."""
    return _counted(state, uid)[2]


def _quota_never_fits(state: ClusterState, gang: Gang, pool: Sequence[Gang]) -> bool:
    """Whether the gang's quota lower bound does not fit even with all of `pool` gone
    (pool usage against the limits along its queue's path, as `QuotaTree` checks them)."""
    quota = state.quota
    charge = _minimum(gang)
    managed = quota.managed(gang.queue)
    if not any(v and r in managed for r, v in charge.items()):
        return False
    changes: dict[str, dict[str, int]] = {gang.queue: dict(charge)}
    root, admitted = quota.root(gang.queue), state.admitted
    ours: dict[str, bool] = {}  # per queue: in the gang's tree
    for c in pool:
        leaf = c.queue
        inside = ours.get(leaf)
        if inside is None:
            inside = ours[leaf] = quota.root(leaf) == root
        if inside:
            change = changes.setdefault(leaf, {})
            for r, v in admitted[c.uid].charge.items():
                if r in managed:  # what pools_after reads (one tree: one managed set)
                    change[r] = change.get(r, 0) - v
    pools = pools_after(state, changes)
    needed = sorted(r for r, v in charge.items() if v and r in managed)
    for name in quota.path(gang.queue):
        q = quota.get(name)
        if q is None:
            return False
        pool_usage = pools.get(name, quota.pool_usage(name))
        for r in needed:
            limit: int | None = quota.subtree_quota(name, r)
            if q.parent is not None:
                lim = q.quota.get(r)
                blim = lim.borrowing_limit if lim is not None else None
                limit = None if blim is None or limit is None else limit + blim
            if limit is not None and pool_usage.get(r, 0) > limit:
                return True
    return False


class _Probes:
    """`ctx.fits` within a budget (None once it is spent), for sets the policy allows;
    each set is probed once, subsets of a set that did not fit are not probed (evicting
    less cannot help more) nor supersets of one that fitted (answered yes, counted as
    probes). Probes keep their victims released (`keep`):
    whoever reads the state after them must `ctx.settle()` first."""

    def __init__(
        self,
        ctx: CycleContext,
        gang: Gang,
        budget: int,
        allowed: Callable[[Sequence[Gang]], bool] | None,
        counted_out: bool = False,
    ) -> None:
        self.ctx, self.gang, self.left, self.allowed = ctx, gang, budget, allowed
        self.counted_out = counted_out
        """Every set probed is part of one that counting shows cannot fit: each probe
        is answered "no" (and counted in `ctx.probes`) without asking `ctx.fits`."""
        self.known: dict[frozenset[str], bool] = {}
        self.failed: list[frozenset[str]] = []
        self.fitted: list[frozenset[str]] = []

    def fits(self, victims: Sequence[Gang]) -> bool | None:
        uids = frozenset(v.uid for v in victims)
        hit = self.known.get(uids)
        if hit is not None:
            return hit
        if any(uids <= f for f in self.failed):
            return False
        if self.allowed is not None and not self.allowed(victims):
            return False
        if self.left <= 0:
            return None
        self.left -= 1
        if self.counted_out:
            self.ctx.probes += 1  # the probe `ctx.fits` would have answered by counting
            ok = self.known[uids] = False
        elif ANSWER_SUPERSETS and any(uids >= f for f in self.fitted):
            # Evicting more cannot help less (what skipping the parts of a set that did
            # not fit relies on): the probe is counted, its answer known. The state stays
            # as the last probe left it; `CycleContext.take` places the set the search
            # returns if that was not the last probed.
            self.ctx.probes += 1
            ok = self.known[uids] = True
        else:
            ok = self.known[uids] = self.ctx.fits(self.gang, [v.uid for v in victims], keep=True)
        (self.fitted if ok else self.failed).append(uids)
        return ok

    def hopeless(self, uid: str) -> bool:
        """Whether `uid` was in a set that did not fit (so it cannot fit alone)."""
        return any(uid in f for f in self.failed)


ANSWER_SUPERSETS = True
"""`_Probes` answers a set containing one that fitted without probing it (False: it
probes it: the reference the tests compare with)."""

COUNT_UNION_FIRST = True
"""`minimal_victims` counts the union of the sets it could probe before anything else
(False: the whole pool, then every probe: the reference the tests compare with)."""


def _hopeless(ctx: CycleContext, gang: Gang, victims: Sequence[Gang]) -> bool:
    """Whether counting shows that `gang` fits with no part of `victims` evicted
    (devices in total or per node, or its quota lower bound); each test only grows
    stricter for a part of them. The device counts come first: on the bench's
    workloads they decide nearly every hopeless search, the quota bound almost none."""
    state = ctx.state
    return (
        not victims
        or _too_few_devices(state, gang, victims)
        or ctx.too_few_devices(gang, [c.uid for c in victims])
        or _quota_never_fits(state, gang, victims)
    )


def minimal_victims(
    ctx: CycleContext,
    gang: Gang,
    candidates: Sequence[Gang],
    cost: Cost,
    *,
    max_probes: int = 32,
    work_first: bool = False,
    admissible: Admissible | None = None,
    closed: bool = False,
    allowed: Callable[[Sequence[Gang]], bool] | None = None,
    exact_probes: bool = False,
) -> list[str]:
    """A small set of `candidates` whose eviction lets `gang` fit, or [] if none is found.

    Sets are compared by (devices freed, work lost (`cost` summed), highest priority
    evicted, oldest admission evicted (newer is better), gangs evicted, uids);
    `work_first` swaps the first two. Search, in at most `max_probes` what-if probes
    (none when even all candidates cannot free enough devices or quota): greedy in the
    candidates' order and in single-victim cost order (binary search for the shortest
    fitting prefix), a reprieve pass dropping victims the gang does not need (costliest
    first), then single victims cheaper than the best set. `admissible` keeps, in order,
    the candidates a policy allows together (each decided from those kept before it; one
    kept after others must be kept alone); `closed` declares that it keeps every part
    (subsequence) of a sequence it keeps whole, so the reprieve pass (whose sets are
    parts of one kept whole) need not ask it. `allowed` checks a whole set (more victims
    can only satisfy it more). Every set returned was probed and fits. Probes keep their
    victims released from one to the next (see `CycleContext.fits`), so `admissible` and
    `allowed` must not read usage or reservations from the state: they take what they
    need before the search. A set found is returned with the state as the last probe
    left it, for the engine to take the eviction from (`CycleContext.take`) or settle.

    Every set probed is part of the greedy orders' admissible sequences; when counting
    shows even their union cannot let the gang fit, no probe is made (with
    `exact_probes`, for a caller that budgets by `ctx.probes`, the probes the search
    would make are counted as made, each answered "no" without placing: the count is
    then what it would be).
    """
    state = ctx.state
    pool = ctx.evictable_among(candidates)
    if not pool or _too_few_devices(state, gang, pool):
        return []
    chain: Admissible = admissible or list
    size: dict[str, int] = {}
    work: dict[str, float] = {}
    since: dict[str, float] = {}
    one: dict[str, tuple[object, ...]] = {}  # key([c]) of each, without sorting and sums
    for c in pool:
        u = c.uid
        res, freed, _ = _counted(state, u)  # `width`, with the reservation
        size[u] = freed
        lost = work[u] = cost(c)
        at = since[u] = res.admitted_at
        first = (lost, freed) if work_first else (freed, lost)
        one[u] = (*first, c.priority, -at, 1, (u,))

    def key(victims: Sequence[Gang]) -> tuple[object, ...]:
        uids = sorted(v.uid for v in victims)
        freed, lost = sum(size[u] for u in uids), sum(work[u] for u in uids)
        first = (lost, freed) if work_first else (freed, lost)
        top = max(v.priority for v in victims)
        return (*first, top, -min(since[u] for u in uids), len(uids), tuple(uids))

    singly = sorted(pool, key=lambda c: one[c.uid])
    # Every set the search probes is part of one of these two sequences: if counting
    # shows their union cannot free enough, no probe can say yes.
    seqs = [chain(list(pool)), chain(list(singly))]
    union = {g.uid for seq in seqs for g in seq}
    if COUNT_UNION_FIRST:
        counted_out = _hopeless(ctx, gang, [c for c in pool if c.uid in union])
        if counted_out and (not exact_probes or _hopeless(ctx, gang, pool)):
            # Nothing can fit. Probes are made (each answered "no" by counting) only
            # when the whole pool is not hopeless too, which matters to `exact_probes`.
            return []
    else:
        counted_out = False
        if _hopeless(ctx, gang, pool):
            return []
    probes = _Probes(ctx, gang, max_probes, allowed, counted_out)
    best: list[Gang] | None = None
    best_key: tuple[object, ...] = ()
    tried: list[list[str]] = []
    kept: set[str] = set()
    try:
        for seq in seqs:
            uids = [g.uid for g in seq]
            kept.update(uids)
            if not seq or uids in tried:
                continue
            tried.append(uids)
            found = _shortest_prefix(probes, seq)
            if found is None:
                continue
            found = _reprieve(probes, found, lambda c: one[c.uid], None if closed else chain)
            found_key = key(found)
            if best is None or found_key < best_key:
                best, best_key = found, found_key
        for c in singly:
            if best is not None and one[c.uid] >= best_key:
                break
            if c.uid not in kept or probes.hopeless(c.uid):
                continue
            ok = probes.fits([c])
            if ok is None:
                break
            if ok:
                best = [c]
                break
    except BaseException:
        ctx.settle()
        raise
    if best is None:
        ctx.settle()
        return []
    # The state stays as the last probe left it: the engine takes the victims' eviction
    # and the gang's placement from there (CycleContext.take), or settles it.
    chosen = {v.uid for v in best}
    return [c.uid for c in pool if c.uid in chosen]


def _shortest_prefix(probes: _Probes, seq: list[Gang]) -> list[Gang] | None:
    """The shortest prefix of `seq` that fits (see `policies.prefix`), or None. Counts
    devices as the state is settled, leaving an earlier sequence's kept probes in place
    (the next probe releases and restores only the difference)."""
    ctx = probes.ctx
    state = ctx.state
    uids = [g.uid for g in seq]
    need = devices_needed(_minimum(probes.gang))
    free = free_devices(state, ctx.held_published())
    floor = device_floor(state, need, uids, free, lambda uid: ctx.reservation(uid).device_count())
    if floor is None:
        return None
    k = shortest_prefix(lambda n: probes.fits(seq[:n]), floor, len(seq))
    return None if k is None else seq[:k]


def _reprieve(
    probes: _Probes,
    victims: list[Gang],
    cost: Callable[[Gang], tuple[object, ...]],
    chain: Admissible | None,
) -> list[Gang]:
    """Spare every victim the gang fits without (and the policy still allows the rest:
    `chain` None when it allows every part of what it allowed), the costliest first."""
    for v in sorted(victims, key=cost, reverse=True):
        if len(victims) == 1:
            break
        trial = [x for x in victims if x is not v]
        if chain is not None and len(chain(trial)) != len(trial):
            continue
        ok = probes.fits(trial)
        if ok is None:
            break
        if ok:
            victims = trial
    return victims


def _ran_before(state: ClusterState, uid: str) -> bool:
    """Whether an admitted gang served time in an earlier run (it was preempted or
    requeued before): attained service beyond its current run."""
    current = width(state, uid) * max(0.0, state.now - state.admitted[uid].admitted_at)
    return state.attained_service(uid) > current + 1e-9


def _by_priority(gangs: list[Gang], state: ClusterState) -> list[Gang]:
    """Lowest priority first, then newest admission, then uid."""
    admitted = state.admitted
    return sorted(gangs, key=lambda g: (g.priority, -admitted[g.uid].admitted_at, g.uid))


def _lower(index: AdmittedIndex, state: ClusterState, gang: Gang, scope: Scope) -> list[Gang]:
    queue = gang.queue if scope == "queue" else None
    return [g for g in index.gangs(state, queue) if g.priority < gang.priority]


# ---- policies --------------------------------------------------------------------------
@builtin
@dataclass
class PriorityPreemption:
    """Evicts only gangs of strictly lower priority, of the gang's own leaf queue
    (`scope: queue`) or of any queue (`scope: cluster`). Of the sets that let the gang
    fit it takes the one freeing the fewest devices (pods for gangs without devices), then
    losing the least work (device-seconds since admission, or since the last checkpoint
    for gangs with a checkpoint interval), then of the lowest top priority, then newest.
    """

    name = "priority"
    scope: Scope = "queue"
    max_probes: int = 32

    def __post_init__(self) -> None:
        _check_probes(self.max_probes)
        self._index = AdmittedIndex()

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        low = self._index.min_priority(state, gang.queue if self.scope == "queue" else None)
        return low is not None and low < gang.priority

    def help_key(self, gang: Gang) -> Hashable:
        """`could_help` reads the gang's queue and priority only."""
        return gang.priority

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> list[str]:
        state = ctx.state
        candidates = _by_priority(_lower(self._index, state, gang, self.scope), state)
        return minimal_victims(
            ctx,
            gang,
            candidates,
            lambda v: work_lost(state, v.uid, v.checkpoint_interval),
            max_probes=self.max_probes,
        )


_HelpKey = tuple[int | None, tuple[tuple[str, int], ...]]
"""reclaim's `help_key`: (the gang's priority under `priority: lower`, its charge)."""


@dataclass(frozen=True, slots=True)
class _ReclaimView:
    """A leaf queue as reclaim sees it: room left below nominal per managed resource, and
    the other leaves of its tree that borrow with gangs running: (queue, resources it
    borrows, lowest priority running there)."""

    room: dict[str, int]
    lenders: list[tuple[str, frozenset[str], int]]
    lending: dict[str, int] = field(compare=False)
    """What `could_help` reads of `lenders`: per resource borrowed, the lowest priority
    running in a queue that borrows it (0 for every one under `priority: any`)."""
    helps: dict[_HelpKey, bool] = field(default_factory=dict, compare=False)
    """`could_help` per `help_key`: a function of the view and the key alone, so kept for
    as long as an equal view is (a view equal to the last one replaces it by that one)."""


_Moves = tuple[dict[str, tuple[int, int]], frozenset[str]]
"""What differs between two views of a queue where `_answer` reads them: per resource
whose room moved, (lower, higher) room; the resources whose `lending` entry differs."""


def _moves(before: _ReclaimView | None, now: _ReclaimView) -> _Moves | None:
    """The `_Moves` from view `before` to `now`; None when every answer may differ (no
    view before, other managed resources, or lenders in only one of them)."""
    if before is None or before.room.keys() != now.room.keys():
        return None
    if bool(before.lending) != bool(now.lending):
        return None
    was, lending, lent = before.room, before.lending, now.lending
    rooms = {
        r: (left, was[r]) if left < was[r] else (was[r], left)
        for r, left in now.room.items()
        if left != was[r]
    }
    return rooms, frozenset(
        r for r in lending.keys() | lent.keys() if lending.get(r) != lent.get(r)
    )


class _HelpStamp:
    """reclaim's `help_stamp` of a queue: the answers given under it (the `helps` of the
    view it was last checked against), and what changed since the stamp it replaced."""

    __slots__ = ("answers", "changed", "previous", "state", "view")

    def __init__(
        self,
        state: ClusterState,
        previous: _HelpStamp | None = None,
        changed: frozenset[_HelpKey] | None = None,
    ) -> None:
        self.state = state
        self.view: _ReclaimView | None = None
        self.answers: dict[_HelpKey, bool] = {}
        self.previous = previous
        """The stamp this one replaced (itself unlinked from its own: no chain grows)."""
        self.changed = changed
        """The keys answered under `previous` whose answers differ under this one (None:
        not known)."""


@builtin
@dataclass
class ReclaimPreemption:
    """A leaf queue whose usage plus the gang stays within its nominal quota (for every
    quota-managed resource the gang needs) takes back from other queues of its tree that
    borrow: a victim's queue must still borrow, net of victims already chosen from it, a
    resource the gang needs and the victim uses (Kueue's reclaimWithinCohort).
    `priority: lower` also requires lower priority. Victims are chosen as by `priority`.
    """

    name = "reclaim"
    priority: Literal["any", "lower"] = "any"
    max_probes: int = 32

    def __post_init__(self) -> None:
        _check_probes(self.max_probes)
        self._index = AdmittedIndex()
        self._borrowing = BorrowingIndex()
        self._views: dict[str, _ReclaimView | None] = {}
        self._last_views: dict[str, _ReclaimView | None] = {}
        self._views_state: ClusterState | None = None
        self._views_journal: AdmissionJournal | None = None
        self._views_generation = -1
        self._stamps: dict[str, _HelpStamp] = {}
        self._asked: dict[str, dict[str, dict[int, set[_HelpKey]]]] = {}
        """Per queue, resource and positive amount of it, the `help_key`s charging that
        amount asked of the queue's views (in this state): a superset of the keys any
        `helps` holds."""
        self._asked_keys: set[tuple[str, _HelpKey]] = set()
        """The (queue, `help_key`) pairs `_asked` holds the amounts of."""
        self._tree_lenders: dict[str, list[tuple[str, frozenset[str], int]]] = {}
        self._takeable_of: dict[
            tuple[str, tuple[str, ...], frozenset[str]],
            tuple[object, list[Gang], dict[str, tuple[tuple[str, int], ...]]],
        ] = {}

    def _view(self, state: ClusterState, queue: str) -> _ReclaimView | None:
        """What `could_help` needs of a leaf queue (None: the queue does not exist), kept
        until an admission or release may have changed it (see `_catch_up`). A view
        computed again and equal to the one before it is that one (with its answers)."""
        journal = self._views_journal
        if (
            state is not self._views_state
            or journal is None
            or journal.changed
            or state.quota.generation != self._views_generation
        ):
            self._catch_up(state)
        views = self._views
        if queue in views:
            return views[queue]
        quota = state.quota
        q = quota.get(queue)
        view = None
        if q is not None:
            used = quota.usage(queue)
            room = {}
            for r in quota.managed(queue):
                lim = q.quota.get(r)
                room[r] = (lim.nominal if lim is not None else 0) - used.get(r, 0)
            lenders = [t for t in self._lenders_in(state, quota.root(queue)) if t[0] != queue]
            lending: dict[str, int] = {}
            for _, borrowed, low in lenders:
                low = low if self.priority == "lower" else 0
                for r in borrowed:
                    lending[r] = min(low, lending.get(r, low))
            view = _ReclaimView(room, lenders, lending)
            last = self._last_views.get(queue)
            if last is not None and last == view:
                view = last
        views[queue] = view
        return view

    def _catch_up(self, state: ClusterState) -> None:
        """Drop the views admissions and releases since the last call may have changed,
        from the state's admission journal: a view reads its queue's usage (changed only
        by a charge to it) and its tree's lenders (changed only by a charge to one of
        them or a change of who runs there), so the views of the queues named, and every
        view of a tree whose lenders changed; all of them once the queue tree changed."""
        quota = state.quota
        journal = self._views_journal
        if state is not self._views_state or journal is None:
            self._last_views.clear()
            self._views, self._tree_lenders, self._asked = {}, {}, {}
            self._asked_keys = set()
            self._views_state, journal = state, state.admission_journal()
            self._views_journal, self._views_generation = journal, quota.generation
            journal.drain()
            return
        if not journal.changed and quota.generation == self._views_generation:
            return
        changes = journal.drain()
        if changes is None or quota.generation != self._views_generation:
            self._last_views.update(self._views)
            self._views, self._tree_lenders = {}, {}
            self._views_generation = quota.generation
        else:
            self._drop_changed(state, changes)

    def _drop_changed(self, state: ClusterState, changes: Iterable[AdmissionChange]) -> None:
        quota = state.quota
        views, last = self._views, self._last_views
        dirty = {q for _, queue, charged in changes for q in (queue, charged)}
        for root in {quota.root(q) for q in dirty}:
            before = self._tree_lenders.pop(root, None)
            if before is not None and self._lenders_in(state, root) != before:
                dirty.update(q for q in views if quota.root(q) == root)
        for q in dirty:
            if q in views:
                last[q] = views.pop(q)

    def _lenders_in(self, state: ClusterState, root: str) -> list[tuple[str, frozenset[str], int]]:
        """The leaves of the tree under `root` that borrow with gangs running: (queue,
        resources it borrows, lowest priority running there), by name; kept while the
        views of the tree are (see `_catch_up`)."""
        hit = self._tree_lenders.get(root)
        if hit is None:
            quota = state.quota
            hit = self._tree_lenders[root] = []
            for name, borrowed in sorted(self._borrowing.get(state).items()):
                if quota.is_leaf(name) and quota.root(name) == root:
                    low = self._index.min_priority(state, name)
                    if low is not None:
                        hit.append((name, borrowed, low))
        return hit

    def _needs(self, state: ClusterState, gang: Gang) -> dict[str, int] | None:
        """The managed resources the gang needs, or None if it would take its queue
        beyond nominal (then it may not reclaim)."""
        view = self._view(state, gang.queue)
        if view is None:
            return None
        room = view.room
        needs: dict[str, int] = {}
        for r, v in _minimum(gang).items():
            if v and r in room:
                if v > room[r]:
                    return None
                needs[r] = v
        return needs

    def _lenders(
        self, state: ClusterState, gang: Gang, needs: dict[str, int]
    ) -> list[tuple[str, frozenset[str]]]:
        """Other leaves of the gang's tree with gangs running that borrow something it
        needs (of lower priority than the gang's under `priority: lower`)."""
        view = self._view(state, gang.queue)
        if view is None:
            return []
        return [
            (q, borrowed.intersection(needs))
            for q, borrowed, low in view.lenders
            if not borrowed.isdisjoint(needs) and (self.priority == "any" or low < gang.priority)
        ]

    def help_key(self, gang: Gang) -> Hashable:
        """`could_help` reads the gang's queue, minimum charge and (`priority: lower`)
        priority only."""
        priority = gang.priority if self.priority == "lower" else None
        return priority, _minimum.key(gang)

    def help_stamp(self, state: ClusterState, queue: str) -> object:
        """`could_help` is a function of the queue's view and the `help_key`. The stamp
        stays while every answer given under it (recorded in the view's `helps`) is the
        same for the queue's view now: a view that changes only where no answer given
        looks (room that no asked charge comes near) keeps the stamp; an answer that would
        differ makes a new one, which names the keys whose answers differ
        (`help_changed`). Keys never asked are not covered: nobody kept theirs."""
        view = self._view(state, queue)
        if view is None:
            return None
        stamp = self._stamps.get(queue)
        if stamp is not None and stamp.view is view:
            return stamp
        if stamp is None or stamp.state is not state:
            if len(self._stamps) > 4096:
                self._stamps.clear()
            stamp = self._stamps[queue] = _HelpStamp(state)
        else:
            moves = _moves(stamp.view, view)
            answers, helps = stamp.answers, view.helps
            maybe = list(answers) if moves is None else self._crossing(queue, moves)
            helps.update(answers)  # the same answers, but where `maybe` says they may differ
            changed = set()
            for k in maybe:
                a = answers.get(k)
                if a is None:
                    continue  # asked, but not under this stamp
                now = helps[k] = self._answer(view, k)
                if now is not a:
                    changed.add(k)
            if changed:
                stamp.previous = None
                stamp = self._stamps[queue] = _HelpStamp(state, stamp, frozenset(changed))
        stamp.view, stamp.answers = view, view.helps
        return stamp

    def help_changed(self, before: object, after: object) -> frozenset[_HelpKey] | None:
        """The keys answered under `before` whose answers differ under `after`, when
        `after` directly replaced it (None otherwise). Keys never answered under `before`
        are not named: nobody kept an answer for them."""
        if isinstance(after, _HelpStamp) and after.previous is before:
            return after.changed
        return None

    def _crossing(self, queue: str, moves: _Moves) -> set[_HelpKey]:
        """The keys asked of the queue whose answers may differ between two views that
        differ by `moves`: those charging a resource whose `lending` entry changed, or an
        amount of one whose room moved that lies above the lower room and within the
        higher one (it fits one room and not the other); every other answer reads only
        what stayed the same."""
        asked = self._asked.get(queue)
        if not asked:
            return set()
        rooms, lent = moves
        out: set[_HelpKey] = set()
        for r in lent:
            for keys in asked.get(r, {}).values():
                out.update(keys)
        for r, (low, high) in rooms.items():
            for v, keys in asked.get(r, {}).items():
                if low < v <= high:
                    out.update(keys)
        return out

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        view = self._view(state, gang.queue)
        if view is None:
            return False
        key = (gang.priority if self.priority == "lower" else None, _minimum.key(gang))  # help_key
        hit = view.helps.get(key)
        if hit is None:
            hit = view.helps[key] = self._answer(view, key)
            if (gang.queue, key) not in self._asked_keys:
                self._asked_keys.add((gang.queue, key))
                asked = self._asked.setdefault(gang.queue, {})
                for r, v in key[1]:
                    if v:
                        asked.setdefault(r, {}).setdefault(v, set()).add(key)
        return hit

    def _answer(self, view: _ReclaimView, key: _HelpKey) -> bool:
        """`could_help` for the gangs of `help_key` `key` of a queue with `view`: it has
        lenders, the charge fits its room below nominal in every managed resource and needs
        some of them, and a lender borrows one of those (of lower priority, if required:
        a lender of lower priority borrows r exactly when `lending[r]` is lower)."""
        lending = view.lending
        if not lending:
            return False  # no lender (every lender borrows something)
        priority, charge = key
        room = view.room
        needs: list[str] = []
        for r, v in charge:
            if v and r in room:
                if v > room[r]:
                    return False  # it would take its queue beyond nominal
                needs.append(r)
        if self.priority == "any":
            return any(r in lending for r in needs)
        return priority is not None and any(r in lending and lending[r] < priority for r in needs)

    def _takeable(
        self, state: ClusterState, queue: str, needed: tuple[str, ...], resources: frozenset[str]
    ) -> tuple[list[Gang], dict[str, tuple[tuple[str, int], ...]]]:
        """The gangs admitted in `queue` whose charge holds some of `resources`, by uid,
        and per gang the `needed` resources it is charged, with the amounts; kept while
        the queue's gangs and their reservations are (`AdmittedIndex.stamp`)."""
        stamp = self._index.stamp(state, queue)
        key = (queue, needed, resources)
        hit = self._takeable_of.get(key)
        if hit is None or hit[0] is not stamp:
            if len(self._takeable_of) > 4096:
                self._takeable_of.clear()
            gangs: list[Gang] = []
            used: dict[str, tuple[tuple[str, int], ...]] = {}
            admitted = state.admitted
            for g in self._index.gangs(state, queue):
                charge = admitted[g.uid].charge
                for r in resources:
                    if charge.get(r, 0):
                        break
                else:
                    continue  # it holds none of them
                gangs.append(g)
                used[g.uid] = tuple([(r, charge[r]) for r in needed if charge.get(r, 0)])
            hit = self._takeable_of[key] = (stamp, gangs, used)
        return hit[1], hit[2]

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> list[str]:
        state = ctx.state
        quota = state.quota
        needs = self._needs(state, gang)
        if not needs:
            return []
        needed = tuple(sorted(needs))
        candidates: list[Gang] = []
        # per candidate: the needed resources it uses, with how much of each
        uses: dict[str, tuple[tuple[str, int], ...]] = {}
        for q, resources in self._lenders(state, gang, needs):
            takeable, used = self._takeable(state, q, needed, resources)
            if self.priority == "lower":
                takeable = [g for g in takeable if g.priority < gang.priority]
            candidates.extend(takeable)
            uses.update(used)
        # per lender queue and needed resource: how far it borrows now
        above = {
            q: {r: quota.pool_usage(q).get(r, 0) - quota.subtree_quota(q, r) for r in needed}
            for q in sorted({g.queue for g in candidates})
        }

        # per lender queue: how many needed resources it borrows now
        owes = {q: sum(1 for v in over.values() if v > 0) for q, over in above.items()}

        def admissible(seq: Sequence[Gang]) -> list[Gang]:
            # per lender queue: how far it still borrows each needed resource, net of
            # the victims kept from it so far, and how many of them it still borrows; a
            # queue that borrows none of them any more keeps no further victim
            left = {q: dict(over) for q, over in above.items()}
            owing = dict(owes)
            out = []
            for g in seq:
                q = g.queue
                n = owing[q]
                if not n:
                    continue
                rem = left[q]
                used = uses[g.uid]
                for r, _ in used:
                    if rem[r] > 0:
                        break
                else:
                    continue  # it uses nothing its queue still borrows
                out.append(g)
                for r, v in used:
                    was = rem[r]
                    now = rem[r] = was - v
                    if (was > 0) != (now > 0):
                        n += 1 if now > 0 else -1
                owing[q] = n
            return out

        return minimal_victims(
            ctx,
            gang,
            _by_priority(candidates, state),
            lambda v: work_lost(state, v.uid, v.checkpoint_interval),
            max_probes=self.max_probes,
            admissible=admissible,
            # Closed: with fewer victims before it, a victim's queue borrows no less.
            closed=True,
        )


_Removal = tuple[Reservation, frozenset[str], Delta, frozenset[str]]
_removals: dict[str, _Removal] = {}


def _removal(state: ClusterState, up: Climb, uid: str) -> tuple[Delta, frozenset[str]]:
    """An admitted gang's charge removed, as `up.carry` takes it, and the managed
    resources it frees (`_keeps_nominal`): once per reservation and tree structure."""
    res = state.admitted[uid]
    hit = _removals.get(uid)
    if hit is None or hit[0] is not res or hit[1] is not up.managed:
        if len(_removals) > 65536:
            _removals.clear()
        charge = res.charge
        frees = frozenset(r for r in charge if r in up.managed)
        hit = _removals[uid] = (res, up.managed, up.delta(charge, -1), frees)
    return hit[2], hit[3]


def _keeps_nominal(up: Climb, pool: Mapping[str, int], freed: Iterable[str]) -> bool:
    """Whether `up`'s top queue, with pool usage `pool`, keeps at least its quota of
    every managed resource of `freed` (what evictions freed)."""
    nominal = up.nominal
    return all(pool.get(r, 0) >= nominal[r] for r in freed if r in nominal)


class _Rival(NamedTuple):
    """A victim in another queue: the two children of the lowest common ancestor whose
    shares are compared (Kueue's fair sharing compares siblings) and what evicting it
    alone does to its side (signed shares: below nominal is negative)."""

    mine: str
    theirs: str
    initial: float
    alone: float
    """The victim side's share with only this victim gone."""
    initial_ok: bool
    """LessThanInitialShare may take it: not preempted before, and alone it leaves its
    side at its nominal quota."""


@builtin
@dataclass
class FairSharePreemption:
    """Kueue's fair-sharing preemption on signed dominant shares (below nominal: < 0).
    From another queue of its tree it evicts only where that queue's side (child of the
    common ancestor) borrows, the eviction lowers its share and, with P the preemptor
    side's share with the gang, P <= the side's share after (LessThanOrEqualToFinalShare)
    or P < its share before (LessThanInitialShare: gangs never preempted, side kept at
    nominal). In its own queue: strictly lower priority, never raising its share.
    """

    name = "fair-share"
    strategies: tuple[Strategy, ...] = ("LessThanOrEqualToFinalShare", "LessThanInitialShare")
    max_probes: int = 32

    def __post_init__(self) -> None:
        _check_probes(self.max_probes)
        if not self.strategies:
            raise ValueError("strategies must name at least one strategy")
        self._index = AdmittedIndex()
        self._borrowing = BorrowingIndex()
        self._rivals_state: ClusterState | None = None
        self._rivals_journal: AdmissionJournal | None = None
        self._rivals_generation = -1
        self._running_in: list[str] = []
        """The queues with gangs running that `_pairs_of` was worked out for."""
        self._rivals_of: dict[str, dict[str, _Rival]] = {}
        self._share_above: dict[str, bool] = {}
        self._shares: dict[str, float] = {}
        self._sides: dict[tuple[str, str], list[tuple[str, float, float, bool]]] = {}
        self._rival_lists: dict[
            tuple[str, str, str],
            tuple[list[tuple[str, float, float, bool]], list[tuple[str, _Rival]]],
        ] = {}
        self._alone_of: dict[tuple[str, str], tuple[Reservation, int, Hashable, float, bool]] = {}
        self._ran: dict[str, tuple[Reservation, float, bool]] = {}
        self._pairs_of: dict[str, list[tuple[str, str, str]]] = {}
        self._mine_of: dict[str, dict[Hashable, dict[str, float]]] = {}

    def help_key(self, gang: Gang) -> Hashable:
        """`could_help` reads the gang's queue and priority only."""
        return gang.priority

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        low = self._index.min_priority(state, gang.queue)
        if low is not None and low < gang.priority:
            return True
        self._refresh(state)
        hit = self._share_above.get(gang.queue)
        if hit is None:
            hit = self._share_above[gang.queue] = self._sibling_above_share(state, gang.queue)
        return hit

    def _sibling_above_share(self, state: ClusterState, queue: str) -> bool:
        """Whether a sibling of the queue or of an ancestor borrows with a share above 0
        (its signed share, kept by `_side_share`, is above 0 exactly when its share is)."""
        quota = state.quota
        borrowing = self._borrowing.get(state)
        path = quota.path(queue)
        for below, above in itertools.pairwise(path):
            for sibling in quota.children(above):
                if (
                    sibling != below
                    and sibling in borrowing
                    and self._side_share(state, sibling) > 0
                ):
                    return True
        return False

    def _refresh(self, state: ClusterState) -> None:
        """Forget the per-queue memos that admissions and releases since the last call may
        have changed, from the state's admission journal; all of them once the queue tree
        changed. A charge to a leaf moves the pool usage of its path only: a side's share
        and its rivals are forgotten when the side is on that path (the rivals' queue is
        below the side), a preemptor queue's shares with its gang when one of its sides is,
        and what reads the siblings of a path (`_share_above`, `_rivals_of`) when the
        tree is the same; the pairs of sides when the queues with gangs running change."""
        quota = state.quota
        journal = self._rivals_journal
        if state is not self._rivals_state or journal is None:
            self._alone_of.clear()
            self._ran.clear()
            journal = self._rivals_journal = state.admission_journal()
            self._rivals_state, self._rivals_generation = state, -1
        elif not journal.changed and quota.generation == self._rivals_generation:
            return
        if len(self._alone_of) > 65536:
            self._alone_of.clear()
        if len(self._ran) > 65536:
            self._ran.clear()
        changes = journal.drain()
        if changes is None or quota.generation != self._rivals_generation:
            self._rivals_generation = quota.generation
            self._running_in = self._index.queues(state)
            for memo in (self._rivals_of, self._share_above, self._shares, self._sides):
                memo.clear()
            self._pairs_of.clear()
            self._mine_of.clear()
            return
        touched = {n for change in changes for q in change[1:] for n in quota.path(q)}
        trees = {quota.root(n) for n in touched}
        for name in touched:
            self._shares.pop(name, None)
        for key in [k for k in self._sides if k[1] in touched]:
            del self._sides[key]
        for queue in [q for q in self._mine_of if not touched.isdisjoint(quota.path(q)[:-1])]:
            del self._mine_of[queue]
        for memo in (self._share_above, self._rivals_of):
            for queue in [q for q in memo if quota.root(q) in trees]:
                del memo[queue]
        running = self._index.queues(state)
        if running != self._running_in:
            self._running_in = running
            self._pairs_of.clear()
            self._rivals_of.clear()

    def _rivals(self, state: ClusterState, gang: Gang) -> dict[str, _Rival]:
        """Admitted gangs of other queues of the tree whose eviction lowers a positive
        share, by uid (the same for every gang of a queue until someone is admitted or
        released)."""
        self._refresh(state)
        hit = self._rivals_of.get(gang.queue)
        if hit is None:
            hit = self._rivals_of[gang.queue] = self._find_rivals(state, gang)
        return hit

    def _passes(self, rival: _Rival, mine: Mapping[str, float]) -> bool:
        """Whether a strategy may take `rival` alone, `mine` the preemptor's sides' shares
        with the gang."""
        p = mine[rival.mine]
        return (FINAL in self.strategies and p <= rival.alone) or (
            INITIAL in self.strategies and rival.initial_ok and p < rival.initial
        )

    def _mine(self, state: ClusterState, gang: Gang) -> dict[str, float]:
        """The shares of the preemptor's sides (its queue and ancestors below the root)
        with the gang admitted (the same for every gang of its queue with its charge,
        until someone is admitted or released or the queue tree changes)."""
        self._refresh(state)
        mine = self._mine_of.setdefault(gang.queue, {})
        key = _minimum.key(gang)
        hit = mine.get(key)
        if hit is None:
            quota = state.quota
            after = pools_after(state, {gang.queue: _minimum(gang)})
            hit = mine[key] = {
                side: share_of_pool(state, side, after.get(side, quota.pool_usage(side)), True)
                for side in quota.path(gang.queue)[:-1]
            }
        return hit

    def _passing_rivals(
        self, state: ClusterState, gang: Gang, mine: Mapping[str, float]
    ) -> dict[str, _Rival]:
        """The rivals (`_rivals`) a strategy may take alone (`_passes`). A rival's share
        with it alone gone is below its side's share now, so a side whose share now is no
        more than the preemptor side's with the gang has none: those sides are not looked
        at (most searches under contention end here with no candidate)."""
        self._refresh(state)
        out: dict[str, _Rival] = {}
        final, initial_share = FINAL in self.strategies, INITIAL in self.strategies
        for q, side_mine, theirs in self._pairs(state, gang.queue):
            p = mine[side_mine]
            if p >= self._side_share(state, theirs):
                continue
            for uid, rival in self._side_rival_list(state, q, side_mine, theirs):
                # `_passes`
                if (final and p <= rival.alone) or (
                    initial_share and rival.initial_ok and p < rival.initial
                ):
                    out[uid] = rival
        return out

    def _side_rival_list(
        self, state: ClusterState, q: str, side_mine: str, theirs: str
    ) -> list[tuple[str, _Rival]]:
        """`_side_rivals` of leaf `q` and side `theirs` as rivals of preemptors whose
        side is `side_mine`, kept while those are."""
        rows = self._side_rivals(state, q, theirs)
        key = (q, side_mine, theirs)
        hit = self._rival_lists.get(key)
        if hit is None or hit[0] is not rows:
            if len(self._rival_lists) > 4096:
                self._rival_lists.clear()
            hit = self._rival_lists[key] = (
                rows,
                [
                    (uid, _Rival(side_mine, theirs, initial, alone, ok))
                    for uid, initial, alone, ok in rows
                ],
            )
        return hit[1]

    def _side_share(self, state: ClusterState, side: str) -> float:
        """`side`'s signed share now (until someone is admitted or released)."""
        hit = self._shares.get(side)
        if hit is None:
            hit = self._shares[side] = share_of_pool(
                state, side, state.quota.pool_usage(side), True
            )
        return hit

    def _pairs(self, state: ClusterState, queue: str) -> list[tuple[str, str, str]]:
        """(other leaf with gangs running in the tree, the preemptor's side, its side):
        the children of their common ancestor (per queue, until someone is admitted or
        released or the queue tree changes)."""
        self._refresh(state)
        hit = self._pairs_of.get(queue)
        if hit is not None:
            return hit
        quota = state.quota
        path = quota.path(queue)
        at = {q: i for i, q in enumerate(path)}
        out = self._pairs_of[queue] = []
        for q in self._index.queues(state):
            if q == queue or quota.root(q) != path[-1]:
                continue
            theirs_path = quota.path(q)
            j = next(j for j, n in enumerate(theirs_path) if n in at)
            i = at[theirs_path[j]]
            if i == 0 or j == 0:
                continue
            out.append((q, path[i - 1], theirs_path[j - 1]))
        return out

    def _find_rivals(self, state: ClusterState, gang: Gang) -> dict[str, _Rival]:
        out: dict[str, _Rival] = {}
        for q, mine, theirs in self._pairs(state, gang.queue):
            for uid, initial, alone, initial_ok in self._side_rivals(state, q, theirs):
                out[uid] = _Rival(mine, theirs, initial, alone, initial_ok)
        return out

    def _side_rivals(
        self, state: ClusterState, q: str, side: str
    ) -> list[tuple[str, float, float, bool]]:
        """The gangs of leaf `q` whose eviction alone lowers the positive share of `side`
        (q's ancestor below the common one), with the share before and after and whether
        LessThanInitialShare may take them; the same for every preemptor whose side is
        compared with `side` until someone is admitted or released."""
        hit = self._sides.get((q, side))
        if hit is None:
            hit = self._sides[(q, side)] = []
            quota = state.quota
            initial = share_of_pool(state, side, quota.pool_usage(side), True)
            if initial <= 0:
                return hit
            # what `_alone` reads of the state: the pool usage from q up to `side`
            up = climb(quota, q, side)
            usage = tuple(tuple(sorted(quota.pool_usage(n).items())) for n in up.path)
            for g in self._index.gangs(state, q):
                alone, initial_ok = self._alone(state, up, g, usage)
                if alone < initial:
                    hit.append((g.uid, initial, alone, initial_ok))
        return hit

    def _alone(
        self, state: ClusterState, up: Climb, g: Gang, usage: Hashable
    ) -> tuple[float, bool]:
        """`side`'s signed share with only `g` evicted, and whether LessThanInitialShare
        may take `g` (never preempted before, `side` kept at nominal). The shares read the
        queue tree, the gang's reservation and `usage` (the pool usage from its queue up
        to `side`): kept across admissions and releases that change none of them, per
        side (preemptors under different ancestors compare different sides of it)."""
        quota = state.quota
        res = state.admitted[g.uid]
        key = (g.uid, up.top)
        hit = self._alone_of.get(key)
        if hit is None or hit[0] is not res or hit[1] != quota.generation or hit[2] != usage:
            delta, frees = _removal(state, up, g.uid)
            pools = up.carry(delta, None, quota.pool_usage)
            pool = pools.get(up.top, quota.pool_usage(up.top))
            alone = terms_share(up.terms, pool, True)
            keeps = _keeps_nominal(up, pool, frees)
            hit = self._alone_of[key] = (res, quota.generation, usage, alone, keeps)
        return hit[3], hit[4] and not self._ran_before(state, g)

    def _ran_before(self, state: ClusterState, g: Gang) -> bool:
        """`_ran_before`, once per reservation and clock reading (a gang's past runs
        change only when it is released, which ends its reservation)."""
        res = state.admitted[g.uid]
        hit = self._ran.get(g.uid)
        if hit is None or hit[0] is not res or hit[1] != state.now:
            hit = self._ran[g.uid] = (res, state.now, _ran_before(state, g.uid))
        return hit[2]

    @staticmethod
    def _steps(
        state: ClusterState, rivals: Mapping[str, _Rival], mine: Mapping[str, float]
    ) -> dict[str, tuple[_Rival, float, Climb, Delta, frozenset[str]]]:
        """What `victims`' admissibility reads of each rival, looked up once per search:
        (the rival, the preemptor side's share with the gang, the climb from its queue up
        to its side, its charge removed, the quota-managed resources it frees)."""
        quota = state.quota
        gangs = state.admitted_gangs
        out = {}
        for uid, rival in rivals.items():
            up = climb(quota, gangs[uid].queue, rival.theirs)
            out[uid] = (rival, mine[rival.mine], up, *_removal(state, up, uid))
        return out

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> list[str]:
        state = ctx.state
        quota = state.quota
        admitted = state.admitted
        charge = _minimum(gang)
        mine = self._mine(state, gang)  # the preemptor sides' shares with the gang
        rivals = self._passing_rivals(state, gang, mine)
        others = sorted(
            (state.admitted_gangs[uid] for uid in rivals),
            key=lambda g: (-rivals[g.uid].initial, g.priority, -admitted[g.uid].admitted_at, g.uid),
        )
        own = _by_priority(_lower(self._index, state, gang, "queue"), state)
        everyone = [*others, *own]
        # what each strategy's search would find out first (minimal_victims), cheapest
        # and most often decisive first: counting shows no part of them can be enough
        if not everyone or _too_few_devices(state, gang, everyone):
            return []
        if ctx.too_few_devices(gang, [g.uid for g in ctx.evictable_among(everyone)]):
            return []
        if _quota_never_fits(state, gang, everyone):
            return []
        # what the callbacks read, taken now: probes keep victims released (see
        # minimal_victims)
        usage = {q: dict(quota.pool_usage(q)) for q in quota.names()}
        charges = {g.uid: admitted[g.uid].charge for g in everyone}
        steps = self._steps(state, rivals, mine)

        def admissible_under(active: frozenset[str]) -> Admissible:
            # a function of the sequence alone (it reads what was taken above): the
            # search asks it about the whole candidate list twice (which strategies add
            # something, then the search's first order)
            known: dict[tuple[str, ...], list[Gang]] = {}
            final, initial = FINAL in active, INITIAL in active
            pool_of = usage.__getitem__

            def admissible(seq: Sequence[Gang]) -> list[Gang]:
                uids = tuple(g.uid for g in seq)
                hit = known.get(uids)
                if hit is None:
                    hit = known[uids] = kept_of(seq)
                return list(hit)

            def kept_of(seq: Sequence[Gang]) -> list[Gang]:
                # per victim side: pool usage with the victims kept so far gone, the
                # (managed) resources they free, and the side's share then (None: not
                # worked out)
                taken: dict[str, tuple[dict[str, dict[str, int]], frozenset[str], float | None]]
                taken = {}
                out = []
                for g in seq:
                    step = steps.get(g.uid)
                    if step is None:
                        out.append(g)
                        continue
                    rival, p, up, delta, frees = step
                    name = up.top
                    before = taken.get(name)
                    if before is None:
                        if (final and p <= rival.alone) or (
                            initial and rival.initial_ok and p < rival.initial
                        ):
                            taken[name] = (up.carry(delta, None, pool_of), frees, None)
                            out.append(g)
                        continue
                    pools = up.carry(delta, before[0], pool_of)
                    pool = pools.get(name, usage[name])
                    share = terms_share(up.terms, pool, True) if final else None
                    ok = share is not None and p <= share
                    if not ok and initial and rival.initial_ok:
                        was = before[2]
                        if was is None:
                            was = terms_share(up.terms, before[0].get(name, usage[name]), True)
                        ok = p < was and _keeps_nominal(up, pool, before[1] | frees)
                    if ok:
                        taken[name] = (pools, before[1] | frees, share)
                        out.append(g)
                return out

            return admissible

        sides = quota.path(gang.queue)[:-1]
        now = {q: dominant_share(state, q) for q in sides}

        def allowed(victims: Sequence[Gang]) -> bool:
            """Without victims in other queues, the gang may only replace lower priority
            work of its queue without raising a share above max(0, its current one)."""
            if any(v.uid in rivals for v in victims):
                return True
            net = dict(charge)
            for v in victims:
                for r, n in charges[v.uid].items():
                    net[r] = net.get(r, 0) - n
            pools = pools_after(state, {gang.queue: net}, usage=usage)
            for q in sides:
                share = share_of_pool(state, q, pools.get(q, usage[q]))
                if share > max(0.0, now[q]):
                    return False
            return True

        start = ctx.probes
        tried: list[frozenset[str]] = []
        for k in range(1, len(self.strategies) + 1):
            left = self.max_probes - (ctx.probes - start)
            if left <= 0:
                break
            active = frozenset(self.strategies[:k])
            admissible = admissible_under(active)
            usable = frozenset(g.uid for g in admissible(everyone))
            if not usable or any(usable <= t for t in tried):
                continue  # nothing new is allowed: the earlier search covered it
            tried.append(usable)
            found = minimal_victims(
                ctx,
                gang,
                everyone,
                lambda v: work_lost(state, v.uid, v.checkpoint_interval),
                max_probes=left,
                admissible=admissible,
                # Closed: with fewer victims of its side before it, a victim's side has
                # more pool usage left, so every share it is compared with is no lower,
                # and its side keeps at least as much of each resource, fewer of them
                # freed (shares grow with usage; `alone` is a share after fewer victims).
                closed=True,
                allowed=allowed,
                # a later strategy's budget is what this search leaves of `max_probes`
                exact_probes=k < len(self.strategies),
            )
            if found:
                return found
        return []


@builtin
@dataclass
class CostAwarePreemption:
    """Evicts only gangs of strictly lower priority (`scope` as for `priority`) that have
    run at least their `minRuntimeSeconds` (`default_min_runtime_seconds` for gangs with
    none). Prefers the set losing the least work since the victims' last checkpoints
    (device-seconds; every `checkpoint_interval`, else `default_checkpoint_seconds`,
    else since admission), then freeing the fewest devices, then lowest priority, newest.
    """

    name = "cost-aware"
    scope: Scope = "queue"
    default_min_runtime_seconds: float = 0.0
    default_checkpoint_seconds: float | None = None
    max_probes: int = 32

    def __post_init__(self) -> None:
        _check_probes(self.max_probes)
        if self.default_min_runtime_seconds < 0:
            raise ValueError("default_min_runtime_seconds must be >= 0")
        if self.default_checkpoint_seconds is not None and self.default_checkpoint_seconds <= 0:
            raise ValueError("default_checkpoint_seconds must be > 0 when set")
        self._index = AdmittedIndex()

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        low = self._index.min_priority(state, gang.queue if self.scope == "queue" else None)
        return low is not None and low < gang.priority

    def help_key(self, gang: Gang) -> Hashable:
        """`could_help` reads the gang's queue and priority only."""
        return gang.priority

    def _checkpoint(self, g: Gang) -> float | None:
        return g.checkpoint_interval or self.default_checkpoint_seconds

    def _protected_until(self, state: ClusterState, g: Gang) -> float:
        return state.admitted[g.uid].admitted_at + (
            g.min_runtime or self.default_min_runtime_seconds
        )

    def retry_at(self, state: ClusterState, gang: Gang) -> float | None:
        """When the next lower-priority gang in scope stops being protected: a failure to
        preempt for `gang` may pass from then on although nothing else changed."""
        now = state.now
        ends = [
            t
            for g in _lower(self._index, state, gang, self.scope)
            if (t := self._protected_until(state, g)) > now
        ]
        return min(ends, default=None)

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> list[str]:
        state = ctx.state
        now = state.now
        candidates = [
            g
            for g in _lower(self._index, state, gang, self.scope)
            if self._protected_until(state, g) <= now
        ]

        def cost(v: Gang) -> float:
            return work_lost(state, v.uid, self._checkpoint(v))

        admitted = state.admitted
        candidates.sort(
            key=lambda g: (
                cost(g),
                width(state, g.uid),
                g.priority,
                -admitted[g.uid].admitted_at,
                g.uid,
            )
        )
        return minimal_victims(
            ctx, gang, candidates, cost, max_probes=self.max_probes, work_first=True
        )
