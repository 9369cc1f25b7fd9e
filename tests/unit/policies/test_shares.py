"""Dominant shares (policies.shares), the one definition drf and fair-share use: one
behaviour per test."""

from __future__ import annotations

import math

import pytest

from controller.engine.model import Queue, QuotaLimit
from controller.engine.policy import NoPreemption
from controller.engine.state import ClusterState
from policies.ordering import DominantResourceFairness
from policies.shares import dominant_share, pools_after, share_of_pool, weighted_share
from tests.builders import gang, gpu_quota
from tests.unit.policies.test_preemption import GPUS, admit, setup, tree


def both(state: ClusterState, queue: str) -> float:
    """The queue's share as fair-share preemption sees it, checked equal to drf's."""
    share = dominant_share(state, queue)
    assert DominantResourceFairness().shares(state)[queue] == share
    return share


@pytest.mark.parametrize(
    ("uses", "weight", "expected"),
    [
        (2, 1.0, 0.0),  # within nominal
        (6, 1.0, 2 / 8),  # borrows 2 of the parent's 8
        (6, 2.0, 1 / 8),
    ],
)
def test_dominant_share_is_borrowing_over_parent_pool_divided_by_weight(uses, weight, expected):
    state, engine = setup(NoPreemption(), queues=tree(("a", 4, weight), ("b", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=1, queue="a") for i in range(uses)))
    assert both(state, "a") == expected


def test_a_root_has_share_0():
    state, engine = setup(NoPreemption(), queues=tree(("a", 4), ("b", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=1, queue="a") for i in range(8)))
    assert both(state, "org") == 0.0


def test_a_root_left_above_a_shrunk_quota_still_has_share_0():
    state, engine = setup(NoPreemption(), queues=(Queue("solo", quota=gpu_quota(8)),))
    admit(engine, 0, gang("big", gpus=6, queue="solo"))
    state.upsert_queue(Queue("solo", quota=gpu_quota(2)))
    assert state.quota.borrowed("solo", GPUS) == 4
    assert both(state, "solo") == 0.0


def test_a_weight_0_queue_within_its_quota_has_share_0():
    state, engine = setup(NoPreemption(), queues=tree(("a", 4, 0.0), ("b", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=1, queue="a") for i in range(4)))
    assert both(state, "a") == 0.0


def test_a_weight_0_queue_that_borrows_has_infinite_share():
    state, engine = setup(NoPreemption(), queues=tree(("a", 4, 0.0), ("b", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=1, queue="a") for i in range(5)))
    assert both(state, "a") == math.inf


def test_a_weight_0_queue_below_its_quota_keeps_its_unweighted_signed_share():
    state, engine = setup(NoPreemption(), queues=tree(("a", 4, 0.0), ("b", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=1, queue="a") for i in range(2)))
    assert share_of_pool(state, "a", state.quota.pool_usage("a"), signed=True) == -2 / 8


def through_an_empty_pool(weight: float) -> ClusterState:
    """all{gpu: 8} > org (no GPU quota) > a (weight `weight`, nominal 0) using 2 GPUs:
    a borrows what its parent org pools none of (org borrows it from all)."""
    queues = (
        Queue("all", quota=gpu_quota(8)),
        Queue("org", "all"),
        Queue("a", "org", gpu_quota(0), weight=weight),
    )
    state, engine = setup(NoPreemption(), queues=queues)
    admit(engine, 0, gang("a0", gpus=2, queue="a"))
    return state


def test_borrowing_what_the_parent_pools_none_of_gives_no_ratio():
    state = through_an_empty_pool(1.0)
    assert state.quota.borrowed("a", GPUS) == 2
    assert both(state, "a") == 0.0
    assert both(state, "org") == 2 / 8  # the borrowing shows one level up


def test_a_weight_0_queue_borrowing_what_the_parent_pools_none_of_has_infinite_share():
    assert both(through_an_empty_pool(0.0), "a") == math.inf


def test_dominant_share_takes_the_largest_resource_share():
    quota = {GPUS: QuotaLimit(4), "cpu": QuotaLimit(8000)}
    queues = (Queue("org"), Queue("a", "org", quota), Queue("b", "org", quota))
    state, engine = setup(NoPreemption(), queues=queues)
    admit(engine, 0, gang("a0", gpus=1, cpu=13, queue="a"))
    # gpu: 1 used, within 4; cpu: 13000 used, borrows 5000 of org's 16000
    assert both(state, "a") == 5000 / 16000


@pytest.mark.parametrize(
    ("usage", "weight", "expected"),
    [
        ([(6, 4, 8), (1, 4, 16)], 1.0, 2 / 8),
        ([(6, 4, 8), (1, 4, 16)], 0.5, 4 / 8),
        ([(2, 4, 8)], 1.0, 0.0),
        ([(0, 0, 8)], 0.0, 0.0),
        ([(1, 0, 0)], 0.0, math.inf),
        (None, 0.0, 0.0),
    ],
)
def test_weighted_share_of_usage_subtree_quota_and_parent_pool(usage, weight, expected):
    assert weighted_share(weight, usage) == expected


@pytest.mark.parametrize(
    ("uses", "expected"),
    [(2, -2 / 8), (4, 0.0), (6, 2 / 8)],
)
def test_signed_share_says_how_far_below_its_nominal_a_queue_is(uses, expected):
    state, engine = setup(NoPreemption(), queues=tree(("a", 4), ("b", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=1, queue="a") for i in range(uses)))
    assert share_of_pool(state, "a", state.quota.pool_usage("a"), signed=True) == expected
    assert both(state, "a") == max(0.0, expected)


@pytest.mark.parametrize(
    ("extra", "sign", "expected"),
    [({GPUS: 2}, +1, 4 / 8), ({GPUS: 2}, -1, 0.0), ({GPUS: 1}, -1, 1 / 8), (None, +1, 2 / 8)],
)
def test_dominant_share_with_a_charge_added_or_removed(extra, sign, expected):
    state, engine = setup(NoPreemption(), queues=tree(("a", 4), ("b", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=1, queue="a") for i in range(6)))
    assert dominant_share(state, "a", extra, sign) == expected


@pytest.mark.parametrize("change", [3, 1, -1, -3])
def test_pools_after_carries_a_leaf_change_up_exactly_as_quota_charges_it(change):
    queues = (
        Queue("org"),
        Queue("x", "org", {GPUS: QuotaLimit(2, lending_limit=1)}),
        Queue("a", "x", {GPUS: QuotaLimit(2, lending_limit=1)}),
        Queue("b", "org", gpu_quota(4)),
    )
    state, engine = setup(NoPreemption(), queues=queues)
    admit(engine, 0, *(gang(f"a{i}", gpus=1, queue="a") for i in range(3)))
    predicted = pools_after(state, {"a": {GPUS: change}})
    if change > 0:
        state.quota.charge("a", {GPUS: change})
    else:
        state.quota.uncharge("a", {GPUS: -change})
    for q in ("a", "x", "org"):
        assert predicted.get(q, state.quota.pool_usage(q)).get(GPUS, 0) == (
            state.quota.pool_usage(q).get(GPUS, 0)
        )
