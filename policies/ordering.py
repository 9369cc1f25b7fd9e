"""Ordering and fairness policies: which pending gang the cycle tries next.

All are best effort unless stated: the engine skips a gang that does not fit and asks for
the next one. Orders that do not follow the state's own index (priority, then created,
then uid) keep their own sorted index across cycles (`_PendingIndex`), so a cycle costs
a C-level set difference plus O(log n) per gang that came or went, never a re-sort.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from sortedcontainers import SortedList

from controller.engine.context import CycleContext
from controller.engine.errors import InvalidInput
from controller.engine.model import Gang
from controller.engine.placement import minimum_charge
from controller.engine.policy import FifoWithinPriority
from controller.engine.state import ClusterState
from policies.prefix import device_floor, devices_needed, free_devices, shortest_prefix
from policies.registry import builtin
from policies.shares import weighted_share

Key = tuple[Any, ...]
"""A policy's sort key for one gang; the uid is appended as the final tie-break."""
Entry = tuple[tuple[int, float, str], str]
"""The state's pending index entry: (Gang.order_key, uid)."""
_uid: Callable[[Entry], str] = operator.itemgetter(1)


@builtin
@dataclass
class Priority(FifoWithinPriority):
    """Higher priority first, then older (created), then uid, over all queues.

    Best effort: a gang that does not fit is skipped and the next one is tried.
    """

    name = "priority"


# ---- a pending index in a policy's own order ------------------------------------------
class _PendingIndex:
    """One scope's pending gangs sorted by (policy key, uid), kept across cycles.

    Pending gangs change little between cycles, so `sync` pays a C-level set difference
    plus O(log n) per gang added or removed. A gang replaced in place (same uid) is seen
    when walked and re-keyed at the next sync.
    """

    def __init__(self, key: Callable[[ClusterState, Gang], Key]) -> None:
        self.key = key
        self.order: SortedList[tuple[Key, str, Gang]] = SortedList()
        self.keys: dict[str, tuple[Key, str, Gang]] = {}
        self.stale: set[str] = set()

    def add(self, state: ClusterState, gang: Gang) -> None:
        entry = (self.key(state, gang), gang.uid, gang)  # uids are unique: gangs never compared
        self.keys[gang.uid] = entry
        self.order.add(entry)

    def discard(self, uid: str) -> None:
        entry = self.keys.pop(uid, None)
        if entry is not None:
            self.order.remove(entry)

    def sync(self, state: ClusterState, pending: Mapping[str, Gang]) -> tuple[list[str], list[str]]:
        """Follow `pending`; returns the uids removed and the uids (re)added, sorted."""
        keys = self.keys
        gone = sorted(keys.keys() - pending.keys())
        stale = sorted(self.stale & keys.keys())
        self.stale.clear()
        for uid in gone + stale:
            self.discard(uid)
        new: list[str] = []
        if len(pending) != len(keys):  # every pending gang is known unless counts differ
            new = sorted(pending.keys() - keys.keys())
        for uid in new:
            self.add(state, pending[uid])
        return gone, new

    def walk(self, state: ClusterState) -> Iterator[Gang]:
        """Pending gangs in key order, as of the last sync."""
        get = state.pending.get
        for _, uid, known in list(self.order):
            gang = get(uid)
            if gang is None:
                continue
            if gang is not known:
                self.stale.add(uid)
            yield gang


@dataclass
class _Indexed:
    """Base of policies that walk a `_PendingIndex`: one per scope (all queues, or one)."""

    _indexes: dict[str | None, _PendingIndex] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _key(self, state: ClusterState, gang: Gang) -> Key:
        raise NotImplementedError

    def _index(self, state: ClusterState, queue: str | None) -> _PendingIndex:
        index = self._indexes.get(queue)
        if index is None:
            index = self._indexes[queue] = _PendingIndex(self._key)
        pending = (
            state.pending if queue is None else {g.uid: g for g in state.pending_in_order(queue)}
        )
        self._synced(state, queue, index, *index.sync(state, pending))
        return index

    def _synced(
        self,
        state: ClusterState,
        queue: str | None,
        index: _PendingIndex,
        gone: list[str],
        new: list[str],
    ) -> None:
        """Hook: the index just followed the state (LAS tracks promotion deadlines here)."""


# ---- strict FIFO ----------------------------------------------------------------------
@builtin
@dataclass
class StrictFifo(_Indexed):
    """Oldest first (created, then uid; priority ignored) within each leaf queue, queues
    interleaved by created. Once a queue's head does not fit, nothing more of that queue
    is tried this cycle, so no gang overtakes it; other queues go on.
    """

    name = "strict-fifo"
    _failed: Gang | None = field(default=None, init=False, repr=False, compare=False)

    def _key(self, state: ClusterState, gang: Gang) -> Key:
        return (gang.created,)

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[Gang]:
        blocked: set[str] = set()
        for gang in self._index(ctx.state, queue).walk(ctx.state):
            if gang.queue in blocked:
                continue
            self._failed = None
            yield gang
            if self._failed is gang:
                blocked.add(gang.queue)

    def observe(self, gang: Gang, admitted: bool) -> None:
        if not admitted:
            self._failed = gang


# ---- best-effort FIFO with an EASY reservation ----------------------------------------
@builtin
@dataclass
class BestEffortFifo(_Indexed):
    """Oldest first (created, then uid) over all queues; what does not fit is skipped.
    The oldest gang that waited over `starvation_seconds` and does not fit gets the one
    reservation (EASY): its earliest start T is when enough running gangs, by estimated
    end, have finished. After it, over the whole cluster, only gangs whose runtime estimate
    ends by T are tried; with no T (no estimates, never fits) its queue is held behind it.
    """

    name = "best-effort-fifo"
    starvation_seconds: float = 3600.0
    max_probes: int = 16
    """What-if placements allowed for finding T; when they run out, the earliest T not
    yet ruled out is used (it can only hold back more backfill, never delay the gang)."""
    reservation: tuple[str, float | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """This cycle's reserved gang and T (None: no T), for reasons and tests."""
    _failed: Gang | None = field(default=None, init=False, repr=False, compare=False)
    _memo: tuple[object, float | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _nodes: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.starvation_seconds >= 0:
            raise InvalidInput("best-effort-fifo: starvation_seconds", "must be >= 0")
        if self.max_probes < 1:
            raise InvalidInput("best-effort-fifo: max_probes", "must be >= 1")

    def _key(self, state: ClusterState, gang: Gang) -> Key:
        return (gang.created,)

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[Gang]:
        state = ctx.state
        now = state.now
        self.reservation = None
        held: Gang | None = None
        start: float | None = None
        since = state.pending_since
        for gang in self._index(state, queue).walk(state):
            if held is not None:
                # The reservation holds the whole cluster, whatever the held gang is short
                # of: a later gang of any queue may take nodes it needs at T. Without T,
                # holding everything would let one unplaceable gang stall the cluster.
                if start is None:
                    if gang.queue == held.queue:
                        continue
                elif gang.runtime_estimate is None or now + gang.runtime_estimate > start:
                    continue
                yield gang
                continue
            self._failed = None
            yield gang
            if (
                self._failed is gang
                and (start_waiting := since.get(gang.uid)) is not None
                and now - start_waiting > self.starvation_seconds  # as state.waiting
            ):
                held = gang
                start = self._earliest_start(ctx, gang)
                self.reservation = (gang.uid, start)

    def observe(self, gang: Gang, admitted: bool) -> None:
        if not admitted:
            self._failed = gang

    def _earliest_start(self, ctx: CycleContext, gang: Gang) -> float | None:
        """EASY: the end of the shortest prefix of running gangs (by estimated end) whose
        eviction lets `gang` fit, found by binary search with `fits` probes."""
        state = ctx.state
        stamp = (
            gang,
            state.admission_generation,
            state.capacity_epoch,
            state.quota.generation,
            state.namespace_generation,
        )
        memo = self._memo
        if memo is not None and (
            memo[0] == stamp
            or (
                memo[1] is not None
                and state.now < memo[1]
                and self._same_reservation(memo[0], stamp, len(state.nodes))
            )
        ):
            # A T still ahead is kept while the reserved gang, nodes and queues are the
            # same: gangs ending only make the true T earlier (keeping it holds back more
            # backfill, never the gang), and backfill ends by T by construction.
            end = memo[1]
        else:
            end = self._search(ctx, gang)
            self._memo = (stamp, end)
            self._nodes = len(state.nodes)
        return None if end is None else max(end, state.now)

    def _same_reservation(self, old: object, new: tuple[object, ...], nodes: int) -> bool:
        """Same reserved gang, queues and namespaces, and no node came or went."""
        assert isinstance(old, tuple)
        return old[0] is new[0] and old[3:] == new[3:] and nodes == self._nodes

    def _search(self, ctx: CycleContext, gang: Gang) -> float | None:
        state = ctx.state
        ends = sorted(
            (res.admitted_at + est, uid)
            for uid, res in state.admitted.items()
            if (est := state.admitted_gangs[uid].runtime_estimate) is not None
        )
        uids = [uid for _, uid in ends]
        need = devices_needed(minimum_charge(gang))
        floor = device_floor(state, need, uids, free_devices(state))
        if floor is None:
            return None
        budget = [self.max_probes]
        ruled_out = [floor]

        def fits(k: int) -> bool | None:
            if budget[0] <= 0:
                return None
            budget[0] -= 1
            ok = ctx.fits(gang, uids[:k])
            if not ok:
                ruled_out.append(k)
            return ok

        k = shortest_prefix(fits, floor, len(uids))
        if k is None and budget[0] <= 0 and max(ruled_out) < len(uids):
            k = max(ruled_out) + 1  # probes ran out: the earliest T not ruled out
        return None if k is None else ends[k - 1][0]


# ---- dominant resource fairness -------------------------------------------------------
@dataclass(slots=True)
class _Stream:
    """A queue subtree's untried gangs in DRF order, without materialising it.

    Entries of leaf L above `cuts[L]` (all of L's when absent) are anchors: each is a new
    maximum of the stream, so anchors come in ascending key order; `tails[a]` lists the
    entries emitted right after anchor a. `top` is the stream's highest entry.
    """

    leaves: list[str]
    cuts: dict[str, Entry]
    tails: dict[Entry, list[Entry]]
    top: Entry


def _merge(streams: list[_Stream]) -> _Stream:
    """Tied siblings: always take the stream whose next gang has the lowest key. A tail is
    below its anchor, hence below every other head, so this merges the anchors by key."""
    out = streams[0]
    for s in streams[1:]:
        out.leaves += s.leaves
        out.cuts.update(s.cuts)
        out.tails.update(s.tails)
        out.top = max(out.top, s.top)
    return out


def _bisect(entries: Sequence[Entry], x: Entry, right: bool = False) -> int:
    """bisect on a list, or natively (O(log n), not O(log² n)) on the state's SortedList."""
    if isinstance(entries, SortedList):
        return entries.bisect_right(x) if right else entries.bisect_left(x)
    return bisect_right(entries, x) if right else bisect_left(entries, x)


def _then(
    first: _Stream, second: _Stream, rem: Mapping[str, Sequence[Entry]], tops: list[Entry]
) -> _Stream:
    """`first` entirely, then `second`. Anchors of `second` below first's top stop being
    anchors: once top is emitted they are lower than any competing head, so they (with
    their tails) join top's tail. A top that cut something is added to `tops`."""
    top = first.top
    parts: list[Sequence[Entry]] = []
    cuts = False
    for leaf in second.leaves:
        entries = rem[leaf]
        hi = _bisect(entries, top)
        if not hi:
            continue
        cuts = True
        cut = second.cuts.get(leaf)
        lo = 0 if cut is None else _bisect(entries, cut, right=True)
        if lo < hi:
            parts.append(entries[lo:hi])
        if cut is None or cut < top:
            second.cuts[leaf] = top
    if parts:
        below = list(parts[0]) if len(parts) == 1 else sorted(chain.from_iterable(parts))
        moved = {a: t for a, t in second.tails.items() if a < top}
        first.tails.setdefault(top, []).extend(_splice(below, moved))
    if cuts:
        tops.append(top)
    first.tails.update({a: t for a, t in second.tails.items() if a > top})
    first.leaves += second.leaves
    first.cuts.update(second.cuts)
    first.top = max(top, second.top)
    return first


def _splice(anchors: list[Entry], tails: Mapping[Entry, list[Entry]]) -> list[Entry]:
    """Ascending anchors with each tail right after its anchor (tails of these anchors)."""
    if not tails:
        return anchors
    out: list[Entry] = []
    prev = 0
    for at, anchor in sorted((bisect_left(anchors, a), a) for a in tails):
        out += anchors[prev : at + 1]
        out += tails[anchor]
        prev = at + 1
    out += anchors[prev:]
    return out


@dataclass(slots=True)
class _DrfCycle:
    """One cycle's DRF walk: the order being walked and the ranks it was built for."""

    state: ClusterState
    ranks: dict[str, int]
    out: list[str]
    """Uids in order: the walk reads no entry tuple, only the uid it looks up."""
    walk: Iterator[str]
    """The iterator over `out`; what it has left tells how far the walk got."""


@dataclass(slots=True)
class _DrfMemo:
    """Last cycle's order, for a cycle where gangs only left (admitted, or deleted):

    - with the same tree and ranks, and none of the gone a `top` that cut a stream, the
      order itself still holds once the gone are skipped;
    - with other ranks but the same `cuts`, the anchors still hold: only tails move.
    `leaves` are the per-leaf entries it was built from, less the gone ones since."""

    generation: int
    ranks: dict[str, int]
    leaves: dict[str, list[Entry]]
    tops: list[Entry]
    cuts: dict[str, Entry]
    anchors: list[Entry]
    out: list[str]


@dataclass(frozen=True, slots=True)
class _QueueFacts:
    """What a queue's share depends on besides usage; fixed while the quota tree is."""

    name: str
    parent: str | None
    weight: float
    resources: tuple[tuple[str, int, int], ...]
    """(managed resource, the queue's subtree nominal, its parent's; 0: no parent)."""


@builtin
@dataclass
class DominantResourceFairness:
    """Lowest dominant share first, level by level: the root, then its child, down to a
    leaf, each the lowest share among siblings with untried gangs (ties: the lower
    order_key of the gang each would yield); the leaf gives its next gang by priority,
    then created. Shares are `policies.shares` (the same as fair-share preemption's: a
    root's is 0, a weight-0 queue's infinite while it borrows); they are recomputed only
    after an admission.
    """

    name = "drf"
    _cycle: _DrfCycle | None = field(default=None, init=False, repr=False, compare=False)
    _memo: _DrfMemo | None = field(default=None, init=False, repr=False, compare=False)
    _gone: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _facts: tuple[int, list[_QueueFacts]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[Gang]:
        state = ctx.state
        if queue is not None:
            yield from state.pending_in_order(queue)
            return
        rem = {q: state.pending_index(q) for q in state.pending_queues()}
        ranks = self._ranks(state, rem)
        out = self._whole_order(state, rem, ranks)
        self._gone.clear()
        walk = iter(out)
        self._cycle = _DrfCycle(state, ranks, out, walk)
        get = state.pending.get
        for uid in walk:  # `observe` may replace what follows the current uid
            gang = get(uid)
            if gang is not None:
                yield gang
        self._cycle = None

    def observe(self, gang: Gang, admitted: bool) -> None:
        """After an admission, re-rank the untried gangs if any sibling order changed.

        The new order replaces the rest of the list `order` is walking (a list iterator
        reads by position), so drawing a gang costs the same as in FIFO: no check per gang.
        """
        if admitted:
            self._gone.add(gang.uid)
            self._reorder(gang)

    def _whole_order(
        self, state: ClusterState, rem: Mapping[str, Sequence[Entry]], ranks: dict[str, int]
    ) -> list[str]:
        """All pending gangs' uids in DRF order: last cycle's order, or its anchors with new
        tails, when they still hold (see _DrfMemo); else built from scratch."""
        memo = self._memo if self._memo_holds(state, rem) else None
        if memo is not None and memo.ranks == ranks and self._gone.isdisjoint(map(_uid, memo.tops)):
            return memo.out
        leaves = memo.leaves if memo is not None else {q: list(e) for q, e in rem.items()}
        tops: list[Entry] = []
        top = _drf_streams(state, leaves, ranks, tops)
        cuts = top.cuts if top is not None else {}
        if memo is not None and cuts == memo.cuts:
            anchors = memo.anchors
        else:
            anchors = _anchors(top, state.pending_index(None))
        out = list(map(_uid, _splice(anchors, top.tails if top is not None else {})))
        self._memo = _DrfMemo(state.quota.generation, ranks, leaves, tops, cuts, anchors, out)
        return out

    def _memo_holds(self, state: ClusterState, rem: Mapping[str, Sequence[Entry]]) -> bool:
        """Whether gangs only left since the memo (same tree, each leaf's entries less the
        ones admitted since); a C-level check, no rebuild. Brings `memo.leaves` up to date."""
        memo = self._memo
        if (
            memo is None
            or memo.generation != state.quota.generation
            or not memo.leaves.keys() >= rem.keys()
        ):
            return False
        gone = self._gone
        for leaf, old in memo.leaves.items():
            now = list(rem.get(leaf, ()))
            if now != old:
                if now != [e for e in old if e[1] not in gone]:
                    return False
                memo.leaves[leaf] = now
        return True

    def _reorder(self, gang: Gang) -> None:
        cycle = self._cycle
        if cycle is None:
            return
        state = cycle.state
        queues = state.pending_queues()
        ranks = self._ranks(state, queues)
        if ranks == cycle.ranks:
            return
        out = cycle.out
        at = len(out) - operator.length_hint(cycle.walk)
        if not (0 < at <= len(out) and out[at - 1] == gang.uid):
            return  # not the gang just drawn from this order
        tried = set(out[:at])
        every = [e for e in state.pending_index(None) if e[1] not in tried]
        rem = {
            q: kept
            for q in queues
            if (kept := [e for e in state.pending_index(q) if e[1] not in tried])
        }
        cycle.ranks = ranks
        self._memo = None  # its order is being rewritten
        out[at:] = map(_uid, _drf_order(state, every, rem, ranks))

    def shares(self, state: ClusterState) -> dict[str, float]:
        """Every queue's dominant share (`policies.shares.weighted_share`)."""
        quota = state.quota
        out: dict[str, float] = {}
        for q in self._queue_facts(state):
            used = quota.pool_usage(q.name)
            usage = None
            if q.parent is not None:
                usage = [(used.get(r, 0), own, pool) for r, own, pool in q.resources]
            out[q.name] = weighted_share(q.weight, usage)
        return out

    def _ranks(self, state: ClusterState, leaves: Iterable[str]) -> dict[str, int]:
        """Each queue's place among its siblings by share (equal shares, equal place):
        all the order depends on besides the gangs. Queues missing from the tree (their
        gangs only get a reason) rank as roots with share 0."""
        shares = self.shares(state)
        parent = {q.name: q.parent for q in self._queue_facts(state)}
        siblings: dict[str | None, list[tuple[float, str]]] = {}
        for name, share in shares.items():
            siblings.setdefault(parent[name], []).append((share, name))
        for leaf in leaves:
            if leaf not in shares:
                siblings.setdefault(None, []).append((0.0, leaf))
        ranks: dict[str, int] = {}
        for group in siblings.values():
            group.sort()
            rank, last = -1, -math.inf
            for share, name in group:
                if share != last:
                    rank, last = rank + 1, share
                ranks[name] = rank
        return ranks

    def _queue_facts(self, state: ClusterState) -> list[_QueueFacts]:
        quota = state.quota
        if self._facts is None or self._facts[0] != quota.generation:
            facts = []
            for name in quota.names():
                q = quota.get(name)
                assert q is not None
                parent = q.parent if q.parent is not None and quota.get(q.parent) else None
                resources = tuple(
                    (
                        r,
                        quota.subtree_quota(name, r),
                        quota.subtree_quota(parent, r) if parent is not None else 0,
                    )
                    for r in sorted(quota.managed(name))
                )
                facts.append(_QueueFacts(name, parent, q.weight, resources))
            self._facts = (quota.generation, facts)
        return self._facts[1]


def _drf_streams(
    state: ClusterState,
    rem: Mapping[str, Sequence[Entry]],
    ranks: Mapping[str, int],
    tops: list[Entry],
) -> _Stream | None:
    """The whole tree's stream of the per-leaf entries `rem`, for fixed ranks."""
    quota = state.quota
    children: dict[str | None, list[str]] = {}
    for leaf in rem:
        path = quota.path(leaf)
        for child, parent in zip(path, [*path[1:], None], strict=True):
            kids = children.setdefault(parent, [])
            if child in kids:
                break
            kids.append(child)

    def stream(node: str | None) -> _Stream | None:
        parts: list[tuple[int, str, _Stream]] = []
        if node is not None and rem.get(node):  # a leaf; or gangs left in an inner queue
            parts.append((-1, node, _Stream([node], {}, {}, rem[node][-1])))
        for child in children.get(node, ()):
            s = stream(child)
            if s is not None:
                parts.append((ranks.get(child, 0), child, s))
        parts.sort(key=lambda p: (p[0], p[1]))
        out: _Stream | None = None
        i = 0
        while i < len(parts):
            j = i + 1
            while j < len(parts) and parts[j][0] == parts[i][0]:
                j += 1
            group = _merge([p[2] for p in parts[i:j]])
            out = group if out is None else _then(out, group, rem, tops)
            i = j
        return out

    return stream(None)


def _anchors(top: _Stream | None, every: Sequence[Entry]) -> list[Entry]:
    """The top stream's anchors: `every` (all entries, ascending) less those in tails."""
    if top is None or not top.tails:
        return list(every)
    clumped = set(map(_uid, chain.from_iterable(top.tails.values())))
    return [e for e in every if e[1] not in clumped]


def _drf_order(
    state: ClusterState,
    every: Sequence[Entry],
    rem: Mapping[str, Sequence[Entry]],
    ranks: Mapping[str, int],
) -> list[Entry]:
    """The entries (`every`, and per leaf in `rem`) in DRF order for fixed ranks."""
    top = _drf_streams(state, rem, ranks, [])
    return _splice(_anchors(top, every), top.tails if top is not None else {})


# ---- least attained service -----------------------------------------------------------
@builtin
@dataclass
class LeastAttainedService(_Indexed):
    """Tiresias-style discretised least attained service: a gang's level is the number of
    `thresholds` (device-seconds, pod-seconds without devices) at or below its attained
    service; lower levels first, then created, then uid (priority ignored). A gang that
    waited over `promote_after_seconds` since it last became pending is promoted to level
    0 until it runs again (None: never). Best effort: what does not fit is skipped.
    """

    name = "las"
    thresholds: tuple[float, ...] = (4 * 3600.0, 32 * 3600.0)
    promote_after_seconds: float | None = 8 * 3600.0
    _deadlines: dict[str | None, SortedList[tuple[float, str]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _since: dict[str | None, dict[str, float]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if any(not t >= 0 for t in self.thresholds):
            raise InvalidInput("las: thresholds", "must be >= 0")
        if list(self.thresholds) != sorted(self.thresholds):
            raise InvalidInput("las: thresholds", "must be in ascending order")
        if self.promote_after_seconds is not None and not self.promote_after_seconds >= 0:
            raise InvalidInput("las: promote_after_seconds", "must be >= 0")

    def level(self, state: ClusterState, uid: str) -> int:
        """The gang's LAS level now (0 when promoted)."""
        promote = self.promote_after_seconds
        if promote is not None and state.waiting(uid) > promote:
            return 0
        return bisect_right(self.thresholds, state.attained_service(uid))

    def _key(self, state: ClusterState, gang: Gang) -> Key:
        return (self.level(state, gang.uid), gang.created)

    def _synced(
        self,
        state: ClusterState,
        queue: str | None,
        index: _PendingIndex,
        gone: list[str],
        new: list[str],
    ) -> None:
        """Promotion without rescans: pending gangs' service is constant, so only the
        waiting time changes a key; deadlines are kept sorted and popped when due."""
        promote = self.promote_after_seconds
        if promote is None:
            return
        deadlines = self._deadlines.setdefault(queue, SortedList())
        since = self._since.setdefault(queue, {})
        for uid in gone:
            if uid in since:
                deadlines.remove((since.pop(uid), uid))
        for uid in new:
            if uid in since:  # re-keyed in place: drop its old deadline
                deadlines.remove((since.pop(uid), uid))
            if index.keys[uid][0][0] > 0:
                since[uid] = start = state.pending_since.get(uid, state.now)
                deadlines.add((start, uid))
        while deadlines and state.waiting(deadlines[0][1]) > promote:
            _, uid = deadlines.pop(0)
            del since[uid]
            gang = index.keys[uid][2]
            index.discard(uid)
            index.add(state, gang)

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[Gang]:
        return self._index(ctx.state, queue).walk(ctx.state)

    def observe(self, gang: Gang, admitted: bool) -> None:
        """An admitted gang that comes back (preempted) has more service and a new
        waiting start: re-key it at the next sync even if it looks unchanged."""
        if admitted:
            for index in self._indexes.values():
                index.stale.add(gang.uid)


# ---- shortest job first ---------------------------------------------------------------
@builtin
@dataclass
class ShortestJobFirst(_Indexed):
    """Shortest runtime_estimate first; gangs without an estimate last; ties by
    priority, then created, then uid. Best effort; a baseline for simulations.
    """

    name = "sjf"

    def _key(self, state: ClusterState, gang: Gang) -> Key:
        est = gang.runtime_estimate
        return (est is None, est or 0.0, -gang.priority, gang.created)

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[Gang]:
        return self._index(ctx.state, queue).walk(ctx.state)

    def observe(self, gang: Gang, admitted: bool) -> None:
        return None
