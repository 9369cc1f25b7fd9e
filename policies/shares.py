"""Kueue-style dominant resource shares of queues: the one definition, used by fair
ordering (`drf`) and fair-share preemption.

A queue's share says how much of what its siblings lend it takes. Over the quota-managed
resources of its tree, with W the usage its pool serves (`QuotaTree.pool_usage`: a
leaf's own usage; for an inner queue its children's usage beyond what they keep
guaranteed, as Kueue counts a cohort's usage), it borrows `W - subtree quota` of a
resource from its parent's pool (the parent's subtree quota: its own nominal plus what
its children lend). Its share is the largest `borrowed / parent pool`, divided by its
weight; a resource its parent pools none of gives no ratio (nothing to be a fraction
of: that borrowing shows in the parent's own share, a level up).

- A root's share is 0: it has no parent to borrow from (a root cannot borrow, and one
  left above a quota that shrank under running gangs still takes nothing from any
  sibling: separate trees lend each other nothing), so fairness between roots is only
  the order of their gangs.
- A weight-0 queue's share is infinite while it borrows anything (W above its subtree
  quota for any resource, even one its parent pools none of), and otherwise what a
  weight-1 queue's would be (0, or below 0 signed). As in Kueue (`fairSharing.weight:
  0`), the weight scales a queue's claim on what others lend, not its nominal quota: a
  weight-0 queue gets borrowed capacity only when nobody else wants it and loses it
  first, but within its quota it is as entitled as any queue.

Signed shares (preemption's LessThanInitialShare) keep how far below its quota a queue
is (negative) instead of 0. What-if shares (a gang admitted, victims removed) propagate
leaf changes up the tree exactly as `QuotaTree` charges them, without touching the state.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Mapping

from controller.engine.quota import QuotaTree
from controller.engine.state import ClusterState

ShareTerms = tuple[float, tuple[tuple[str, int, int], ...] | None]
"""A queue's weight and, per quota-managed resource of its tree (sorted), its subtree
quota and its parent's (None for a root): what its share reads of the tree."""


class _Derived:
    """What shares read of one queue tree's structure, kept until its `generation`
    moves (every change of queues, limits or weights moves it)."""

    __slots__ = ("climbs", "generation", "terms")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.climbs: dict[tuple[str, str | None], Climb] = {}
        self.terms: dict[str, ShareTerms | None] = {}


_derived_of: weakref.WeakKeyDictionary[QuotaTree, _Derived] = weakref.WeakKeyDictionary()


def _derived(quota: QuotaTree) -> _Derived:
    hit = _derived_of.get(quota)
    if hit is None or hit.generation != quota.generation:
        hit = _derived_of[quota] = _Derived(quota.generation)
    return hit


def guaranteed(quota: QuotaTree, queue: str, resource: str) -> int:
    """What `queue` keeps for its own subtree and never lends (subtree - lendable)."""
    sub = quota.subtree_quota(queue, resource)
    q = quota.get(queue)
    lim = q.quota.get(resource) if q is not None else None
    if lim is None or lim.lending_limit is None:
        return 0
    return sub - min(lim.lending_limit, sub)


Delta = tuple[tuple[str, int], ...]
"""A signed change of a leaf's usage, quota-managed resources only, no zeros, sorted."""


class Climb:
    """What carrying a change of one leaf's usage up its path reads of the tree: the
    queues from the leaf up to and including `upto` (the whole path if None or not on
    it), the resources its tree manages and what each of those queues keeps guaranteed
    of them (see `pools_after`); and of the top queue, its `share_terms` and subtree
    quota of each managed resource. Kept per tree structure (`climb`)."""

    __slots__ = ("kept", "managed", "nominal", "path", "terms", "top")

    def __init__(self, quota: QuotaTree, leaf: str, upto: str | None) -> None:
        path = quota.path(leaf)
        if upto is not None and upto in path:
            path = path[: path.index(upto) + 1]
        self.path = tuple(path)
        self.top = path[-1]
        self.managed = quota.managed(leaf)
        self.kept = tuple(
            {r: guaranteed(quota, name, r) for r in sorted(self.managed)} for name in path
        )
        self.terms = share_terms(quota, self.top)
        self.nominal = {r: quota.subtree_quota(self.top, r) for r in sorted(self.managed)}

    def delta(self, change: Mapping[str, int], sign: int = +1) -> Delta:
        """`change` (times `sign`) as the `Delta` `carry` takes."""
        managed = self.managed
        return tuple((r, sign * v) for r, v in sorted(change.items()) if v and r in managed)

    def carry(
        self,
        delta: Delta,
        base: Mapping[str, dict[str, int]] | None,
        pool_of: Callable[[str], Mapping[str, int]],
    ) -> dict[str, dict[str, int]]:
        """`pools_after` for this leaf's `delta` alone, up to this climb's top: a new
        mapping holding `base`'s pools (the same objects, not copies) but for those the
        change reaches (changed copies); a pool not in `base` is read by `pool_of`.
        Neither `base` nor what `pool_of` returns is changed."""
        pools = dict(base) if base else {}
        step: Iterable[tuple[str, int]] = delta
        for name, kept in zip(self.path, self.kept, strict=True):
            if not step:
                break
            was = pools.get(name)
            pool = pools[name] = dict(pool_of(name) if was is None else was)
            nxt: list[tuple[str, int]] = []
            for r, d in step:
                old = pool.get(r, 0)
                new = pool[r] = old + d
                g = kept[r]
                up = max(0, new - g) - max(0, old - g)
                if up:
                    nxt.append((r, up))
            step = nxt
        return pools


def climb(quota: QuotaTree, leaf: str, upto: str | None = None) -> Climb:
    """The `Climb` of `leaf` up to `upto`, kept while the tree's structure is the same."""
    derived = _derived(quota)
    key = (leaf, upto)
    hit = derived.climbs.get(key)
    if hit is None:
        hit = derived.climbs[key] = Climb(quota, leaf, upto)
    return hit


def pools_after(
    state: ClusterState,
    changes: Mapping[str, Mapping[str, int]],
    upto: str | None = None,
    base: Mapping[str, Mapping[str, int]] | None = None,
    usage: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, dict[str, int]]:
    """Pool usage W of every queue on the paths of the changed leaves (up to and
    including `upto`, if given) after adding the signed per-leaf `changes` (a gang's
    charge, or minus a victim's) to `base` (an earlier result) or to the usage now
    (`usage`, every queue's pool usage taken earlier, or the state's); queues not
    returned are unchanged."""
    quota = state.quota
    pool_of = usage.__getitem__ if usage is not None else quota.pool_usage
    pools = {q: dict(p) for q, p in base.items()} if base else {}
    for leaf in sorted(changes):
        up = climb(quota, leaf, upto)
        # each leaf's change carried on top of those before it (paths may meet)
        pools = up.carry(up.delta(changes[leaf]), pools, pool_of)
    return pools


Usage = tuple[int, int, int]
"""One quota-managed resource of a queue: (pool usage W, subtree quota, parent's pool)."""


def weighted_share(weight: float, usage: Iterable[Usage] | None, signed: bool = False) -> float:
    """The dominant share (see the module docstring) of a queue with `weight` and these
    resources; `usage` is None for a root."""
    if usage is None:
        return 0.0
    best = -math.inf
    borrowing = False
    for used, own, lendable in usage:
        if not (own or used):
            continue
        borrowing = borrowing or used > own
        if lendable > 0:
            best = max(best, (used - own) / lendable)
    if best == -math.inf or not (signed or best > 0):
        best = 0.0
    if weight == 0:
        return math.inf if borrowing else best
    return best / weight


def share_of_pool(
    state: ClusterState, queue: str, pool: Mapping[str, int], signed: bool = False
) -> float:
    """The dominant share `queue` would have with pool usage `pool`."""
    return terms_share(share_terms(state.quota, queue), pool, signed)


def terms_share(terms: ShareTerms | None, pool: Mapping[str, int], signed: bool = False) -> float:
    """`share_of_pool` of a queue with `share_terms` `terms` (for a caller that asks
    about one queue many times)."""
    if terms is None:
        return 0.0
    weight, rows = terms
    if rows is None:
        return weighted_share(weight, None, signed)
    return weighted_share(weight, ((pool.get(r, 0), own, up) for r, own, up in rows), signed)


def share_terms(quota: QuotaTree, queue: str) -> ShareTerms | None:
    """What `share_of_pool` reads of the tree for `queue` (None: no such queue), kept
    while the tree's structure is the same."""
    derived = _derived(quota)
    try:
        return derived.terms[queue]
    except KeyError:
        pass
    q = quota.get(queue)
    terms: ShareTerms | None = None
    if q is not None:
        path = quota.path(queue)
        rows = None
        if len(path) > 1:
            parent = path[1]
            rows = tuple(
                (r, quota.subtree_quota(queue, r), quota.subtree_quota(parent, r))
                for r in sorted(quota.managed(queue))
            )
        terms = (q.weight, rows)
    derived.terms[queue] = terms
    return terms


def dominant_share(
    state: ClusterState, queue: str, extra: Mapping[str, int] | None = None, sign: int = +1
) -> float:
    """`queue`'s dominant share now, or with `extra` added (sign=-1: removed).

    For a leaf, `extra` is a change of its usage (a gang's charge). For an inner queue it
    is added to its pool usage as is; use `pools_after` to carry a leaf's change up.
    """
    quota = state.quota
    if not extra:
        return share_of_pool(state, queue, quota.pool_usage(queue))
    if quota.is_leaf(queue):
        change = {r: sign * v for r, v in extra.items()}
        pool = pools_after(state, {queue: change}).get(queue, quota.pool_usage(queue))
        return share_of_pool(state, queue, pool)
    pool = dict(quota.pool_usage(queue))
    for r, v in extra.items():
        pool[r] = pool.get(r, 0) + sign * v
    return share_of_pool(state, queue, pool)
