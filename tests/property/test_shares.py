"""Fair ordering (`drf`) and fair-share preemption measure queues by one dominant share."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from controller.engine.model import Queue
from controller.engine.state import ClusterState
from policies.ordering import DominantResourceFairness
from policies.shares import climb, dominant_share, pools_after, share_of_pool
from tests.property.harness import property_settings
from tests.property.strategies import queue_trees, quota_charges

Tree = tuple[tuple[Queue, ...], tuple[str, ...]]
Charges = list[tuple[str, dict[str, int], bool]]

trees_with_usage = queue_trees().flatmap(
    lambda tree: st.tuples(st.just(tree), quota_charges(tree[1], max_size=16))
)


@property_settings(300)
@given(trees_with_usage)
def test_drf_and_fair_share_agree_on_every_queues_share(case: tuple[Tree, Charges]) -> None:
    """Random trees (1-2 roots, weights including 0) with random usage, charged without
    limits so that roots and queues may also sit above quotas (as after a quota shrank
    under running gangs): drf's share of every queue is fair-share's, its signed share
    clipped at 0; a root's is 0 and a weight-0 queue's infinite exactly when it borrows."""
    (queues, _), charges = case
    state = ClusterState()
    for q in queues:
        state.upsert_queue(q)
    for leaf, charge, _ in charges:
        state.quota.charge(leaf, charge)
    quota = state.quota
    drf = DominantResourceFairness().shares(state)
    assert set(drf) == {q.name for q in queues}
    for q in queues:
        share = dominant_share(state, q.name)
        assert drf[q.name] == share, q.name
        signed = share_of_pool(state, q.name, quota.pool_usage(q.name), signed=True)
        assert max(0.0, signed) == share, q.name
        if quota.root(q.name) == q.name:
            assert share == 0.0, q.name
        elif q.weight == 0:
            borrows = any(quota.borrowed(q.name, r) for r in quota.managed(q.name))
            assert share == (math.inf if borrows else 0.0), q.name


@property_settings(300)
@given(
    queue_trees().flatmap(
        lambda tree: st.tuples(
            st.just(tree), quota_charges(tree[1], max_size=8), quota_charges(tree[1], max_size=6)
        )
    )
)
def test_what_if_pools_are_those_quota_charges_lead_to(
    case: tuple[Tree, Charges, Charges],
) -> None:
    """Random trees with random usage: the pool usage `pools_after` predicts for several
    leaves' changes at once, and that of carrying them one at a time up a `climb` (each
    on the pools the one before left, as fair-share's admissibility does), are every
    queue's pool usage once QuotaTree has charged them; neither changes what it was
    given."""
    (queues, _), usage, changes = case
    state = ClusterState()
    for q in queues:
        state.upsert_queue(q)
    quota = state.quota
    for leaf, charge, _ in usage:
        quota.charge(leaf, charge)
    signed: dict[str, dict[str, int]] = {}
    for leaf, charge, uncharge in changes:
        mine = signed.setdefault(leaf, {})
        for r, v in charge.items():
            used = quota.usage(leaf).get(r, 0) + mine.get(r, 0)
            mine[r] = mine.get(r, 0) + (-min(v, used) if uncharge else v)
    before = {q.name: dict(quota.pool_usage(q.name)) for q in queues}
    together = pools_after(state, signed, usage=before)
    chained: dict[str, dict[str, int]] = {}
    for leaf in sorted(signed):
        up = climb(quota, leaf)
        chained = up.carry(up.delta(signed[leaf]), chained, before.__getitem__)
    assert before == {q.name: dict(quota.pool_usage(q.name)) for q in queues}
    for leaf, change in signed.items():
        quota.charge(leaf, {r: v for r, v in change.items() if v > 0})
        quota.uncharge(leaf, {r: -v for r, v in change.items() if v < 0})
    for q in queues:
        now = {r: v for r, v in quota.pool_usage(q.name).items() if v}
        for predicted in (together, chained):
            pool = predicted.get(q.name, before[q.name])
            assert {r: v for r, v in pool.items() if v} == now, q.name
