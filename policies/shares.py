"""Kueue-style dominant resource shares of queues, shared by fair ordering and preemption.

A queue's share is, over the quota-managed resources of its tree, the largest
`borrowed / parent pool`, divided by its weight: borrowed = max(0, W - subtree quota),
with W the usage its pool serves (`QuotaTree.pool_usage`: a leaf's own usage; for an
inner queue its children's usage beyond what they keep guaranteed, as Kueue counts a
cohort's usage). A root has share 0; a weight of 0 makes any borrowing infinite.
What-if shares (a gang admitted, victims removed) propagate leaf changes up the tree
exactly as `QuotaTree` charges them, without touching the state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from controller.engine.quota import QuotaTree
from controller.engine.state import ClusterState


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
) -> dict[str, dict[str, int]]:
    """Pool usage W of every queue on the paths of the changed leaves (up to and
    including `upto`, if given) after adding the signed per-leaf `changes` (a gang's
    charge, or minus a victim's) to `base` (an earlier result) or to the current usage;
    queues not returned are unchanged."""
    quota = state.quota
    pools = {q: dict(p) for q, p in base.items()} if base else {}
    for leaf in sorted(changes):
        managed = quota.managed(leaf)
        delta = {r: v for r, v in sorted(changes[leaf].items()) if v and r in managed}
        for name in quota.path(leaf):
            if not delta:
                break
            pool = pools.get(name)
            if pool is None:
                pool = pools[name] = dict(quota.pool_usage(name))
            nxt: dict[str, int] = {}
            for r, d in delta.items():
                old = pool.get(r, 0)
                pool[r] = old + d
                g = guaranteed(quota, name, r)
                up = max(0, old + d - g) - max(0, old - g)
                if up:
                    nxt[r] = up
            delta = nxt
            if name == upto:
                break
    return pools


def share_of_pool(
    state: ClusterState, queue: str, pool: Mapping[str, int], signed: bool = False
) -> float:
    """The dominant share `queue` would have with pool usage `pool`; `signed` keeps how
    far below its quota a queue is (negative) instead of 0, over the resources it has
    quota for or uses."""
    quota = state.quota
    path = quota.path(queue)
    q = quota.get(queue)
    if len(path) < 2 or q is None:
        return 0.0
    parent = path[1]
    best = -math.inf
    borrowing = False
    for r in sorted(quota.managed(queue)):
        own = quota.subtree_quota(queue, r)
        used = pool.get(r, 0)
        if not (own or used):
            continue
        borrowing = borrowing or used > own
        lendable = quota.subtree_quota(parent, r)
        if lendable > 0:
            best = max(best, (used - own) / lendable)
    if best == -math.inf or not (signed or best > 0):
        best = 0.0
    if q.weight == 0:
        return math.inf if borrowing else best
    return best / q.weight


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
