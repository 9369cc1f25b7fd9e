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
from collections.abc import Iterable, Mapping

from controller.engine.quota import QuotaTree
from controller.engine.state import ClusterState

ShareTerms = tuple[float, tuple[tuple[str, int, int], ...] | None]
"""A queue's weight and, per quota-managed resource of its tree (sorted), its subtree
quota and its parent's (None for a root): what its share reads of the tree."""


class _Derived:
    """What shares read of one queue tree's structure, kept until its `generation`
    moves (every change of queues, limits or weights moves it)."""

    __slots__ = ("generation", "guaranteed", "managed", "terms")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.guaranteed: dict[tuple[str, str], int] = {}
        self.managed: dict[str, frozenset[str]] = {}
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
    derived = _derived(quota)
    kept = derived.guaranteed
    pools = {q: dict(p) for q, p in base.items()} if base else {}
    for leaf in sorted(changes):
        managed = derived.managed.get(leaf)
        if managed is None:
            managed = derived.managed[leaf] = quota.managed(leaf)
        delta = {r: v for r, v in sorted(changes[leaf].items()) if v and r in managed}
        for name in quota.path(leaf):
            if not delta:
                break
            pool = pools.get(name)
            if pool is None:
                pool = pools[name] = dict(
                    usage[name] if usage is not None else quota.pool_usage(name)
                )
            nxt: dict[str, int] = {}
            for r, d in delta.items():
                old = pool.get(r, 0)
                pool[r] = old + d
                g = kept.get((name, r))
                if g is None:
                    g = kept[(name, r)] = guaranteed(quota, name, r)
                up = max(0, old + d - g) - max(0, old - g)
                if up:
                    nxt[r] = up
            delta = nxt
            if name == upto:
                break
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
    terms = share_terms(state.quota, queue)
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
