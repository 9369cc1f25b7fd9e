"""Hierarchical quota: nominal, borrowing and lending limits along the queue path."""

from __future__ import annotations

import pytest

from controller.engine.errors import InvalidInput
from controller.engine.model import Queue, QuotaLimit
from controller.engine.quota import QuotaTree

GPU = "devices/gpu"


def tree(*queues: Queue) -> QuotaTree:
    t = QuotaTree()
    for q in queues:
        t.upsert(q)
    return t


def q(name: str, parent: str | None = None, nominal: int = 0, borrow=None, lend=None) -> Queue:
    return Queue(name, parent, {GPU: QuotaLimit(nominal, borrow, lend)})


def two_teams(lend_b=None, borrow_a=None) -> QuotaTree:
    return tree(q("org"), q("a", "org", 10, borrow_a), q("b", "org", 10, None, lend_b))


def test_a_leaf_may_use_its_nominal_quota():
    t = two_teams()
    assert t.check("a", {GPU: 10}) is None


def test_a_leaf_borrows_unused_quota_of_its_sibling():
    t = two_teams()
    assert t.check("a", {GPU: 20}) is None


def test_nothing_fits_beyond_what_the_whole_tree_provides():
    t = two_teams()
    short = t.check("a", {GPU: 21})
    assert short is not None
    assert short.resource == GPU and short.allowed == 20
    assert "needs 21 devices/gpu" in short.message and "room for 20" in short.message


def test_borrowing_limit_caps_use_above_nominal():
    t = two_teams(borrow_a=3)
    assert t.check("a", {GPU: 13}) is None
    short = t.check("a", {GPU: 14})
    assert short is not None and short.queue == "a" and short.allowed == 13


def test_lending_limit_keeps_the_rest_of_nominal_for_its_owner():
    t = two_teams(lend_b=2)
    assert t.check("a", {GPU: 12}) is None
    assert t.check("a", {GPU: 13}) is not None


def test_guaranteed_quota_stays_available_to_its_owner_while_a_sibling_borrows():
    t = two_teams(lend_b=2)
    t.charge("a", {GPU: 12})
    assert t.check("b", {GPU: 8}) is None
    assert t.check("b", {GPU: 9}) is not None


def test_usage_already_charged_reduces_headroom():
    t = two_teams()
    t.charge("b", {GPU: 15})
    assert t.headroom("a", GPU) == (5, "org")


def test_uncharge_returns_headroom():
    t = two_teams()
    t.charge("a", {GPU: 7})
    t.uncharge("a", {GPU: 7})
    assert t.headroom("a", GPU)[0] == 20
    assert t.pool_usage("org") == {GPU: 0} or not any(t.pool_usage("org").values())


def test_releasing_more_than_was_charged_is_refused():
    t = two_teams()
    t.charge("a", {GPU: 1})
    with pytest.raises(InvalidInput, match="releasing 2 devices/gpu but only 1 used"):
        t.uncharge("a", {GPU: 2})


def test_resources_no_queue_declares_are_not_limited():
    t = two_teams()
    assert t.check("a", {"cpu": 10**9}) is None
    assert t.headroom("a", "cpu") == (None, "a")


def test_a_declared_resource_missing_in_a_leaf_can_still_be_borrowed_from_the_pool():
    t = tree(Queue("org", None, {GPU: QuotaLimit(4)}), Queue("a", "org"))
    assert t.check("a", {GPU: 4}) is None
    assert t.check("a", {GPU: 5}) is not None


def test_parent_quota_is_shared_by_its_children():
    t = tree(q("org", None, 6), q("a", "org"), q("b", "org"))
    t.charge("a", {GPU: 4})
    assert t.headroom("b", GPU)[0] == 2


def test_three_level_tree_borrows_across_subtrees():
    t = tree(q("root"), q("x", "root", 0), q("y", "root", 0), q("a", "x", 5), q("b", "y", 5))
    assert t.check("a", {GPU: 10}) is None
    t.charge("b", {GPU: 5})
    assert t.headroom("a", GPU)[0] == 5


def test_queue_cycle_is_refused_and_names_the_cycle():
    t = tree(Queue("a"), Queue("b", "a"), Queue("c", "b"))
    with pytest.raises(InvalidInput, match="queue cycle: a -> c -> b -> a"):
        t.upsert(Queue("a", "c"))
    assert t.get("a") == Queue("a")


def test_a_gang_under_a_queue_refused_for_a_cycle_is_told_the_cycle():
    t = tree(Queue("ring-a", "ring-b"))
    with pytest.raises(InvalidInput):
        t.upsert(Queue("ring-b", "ring-a"))
    assert t.admission_blocker("ring-a") == (
        "queue ring-a: ancestor ring-b is not usable: queue cycle: ring-b -> ring-a -> ring-b"
    )
    assert t.admission_blocker("ring-b") == (
        "queue ring-b is not usable: queue cycle: ring-b -> ring-a -> ring-b"
    )


def test_a_refused_queue_published_again_without_the_cycle_is_usable():
    t = tree(Queue("ring-a", "ring-b"))
    with pytest.raises(InvalidInput):
        t.upsert(Queue("ring-b", "ring-a"))
    t.upsert(Queue("ring-b"))
    assert t.admission_blocker("ring-a") is None


def test_a_refused_queue_deleted_is_forgotten():
    t = tree(Queue("ring-a", "ring-b"))
    with pytest.raises(InvalidInput):
        t.upsert(Queue("ring-b", "ring-a"))
    t.remove("ring-b")
    assert t.admission_blocker("ring-a") == "queue ring-a: ancestor ring-b does not exist"


@pytest.mark.parametrize(
    ("queues", "leaf", "blocker"),
    [
        ((), "nope", "queue nope does not exist"),
        ((Queue("org"), Queue("a", "org")), "org", "queue org is not a leaf queue"),
        ((Queue("a", "missing"),), "a", "ancestor missing does not exist"),
    ],
)
def test_admission_blocker_explains_unusable_queues(queues, leaf, blocker):
    t = tree(*queues)
    assert blocker in (t.admission_blocker(leaf) or "")


def test_a_deleted_queue_keeps_charging_its_running_gangs_along_its_path():
    t = two_teams()
    t.charge("a", {GPU: 3})
    t.remove("a")
    assert t.subtree_usage("org") == {GPU: 3}
    assert t.pool_usage("org") == {GPU: 3}
    assert t.headroom("b", GPU)[0] == 17


def test_a_deleted_queue_admits_nothing_new_while_its_gangs_run():
    t = two_teams()
    t.charge("a", {GPU: 3})
    t.remove("a")
    assert t.admission_blocker("a") == "queue a is deleted: it admits nothing new"


def test_a_deleted_queue_is_dropped_when_its_last_gang_ends():
    t = two_teams()
    t.charge("a", {GPU: 3})
    t.remove("a")
    t.uncharge("a", {GPU: 3})
    assert t.get("a") is None
    assert t.admission_blocker("a") == "queue a does not exist"


def test_a_deleted_queue_without_usage_is_dropped_at_once():
    t = two_teams()
    t.remove("a")
    assert t.names() == ["b", "org"]


def test_deleting_a_queue_invalidates_what_was_derived_from_the_tree():
    t = two_teams()
    t.charge("a", {GPU: 3})
    before = t.generation
    t.remove("a")
    assert t.generation > before


def test_children_of_a_deleted_queue_admit_nothing_new():
    t = tree(q("org"), q("team", "org"), q("a", "team", 4))
    t.remove("team")
    assert t.admission_blocker("a") == "queue a: ancestor team is deleted: it admits nothing new"


def test_a_deleted_parent_stays_while_it_has_children():
    t = tree(q("org"), q("team", "org"), q("a", "team", 4))
    t.remove("team")
    assert t.is_deleted("team")
    assert t.children("team") == ["a"]


def deleted_team_running(gpus: int) -> QuotaTree:
    """org > team > a, with `gpus` charged to a, then team and a deleted."""
    t = tree(q("org"), q("team", "org"), q("a", "team", 4))
    t.charge("a", {GPU: gpus})
    t.remove("team")
    t.remove("a")
    return t


def test_a_deleted_parent_goes_with_its_last_child():
    t = deleted_team_running(1)
    t.uncharge("a", {GPU: 1})
    assert t.names() == ["org"]


def test_a_deleted_parent_goes_when_its_last_child_moves_away():
    t = tree(q("org"), q("team", "org"), q("a", "team", 4))
    t.remove("team")
    t.upsert(q("a", "org", 4))
    assert t.names() == ["a", "org"]


def test_republishing_a_deleted_queue_revives_it():
    t = tree(q("org"), q("team", "org"), q("a", "team", 4))
    t.charge("a", {GPU: 1})
    t.remove("a")
    t.remove("team")
    t.upsert(q("team", "org"))
    t.upsert(q("a", "team", 4))
    assert t.admission_blocker("a") is None
    assert t.pool_usage("team") == {GPU: 1}


def test_moving_a_queue_moves_its_usage_to_the_new_parent():
    t = tree(q("x", None, 10), q("y", None, 10), q("a", "x", 0))
    t.charge("a", {GPU: 4})
    t.upsert(q("a", "y", 0))
    assert t.subtree_usage("y") == {GPU: 4}
    assert t.subtree_usage("x") == {}
    assert t.violations() == []


def test_incremental_pool_usage_matches_recomputation():
    t = tree(q("root", None, 3), q("p", "root", 2, lend=1), q("a", "p", 4, lend=2), q("b", "p", 1))
    t.charge("a", {GPU: 5})
    t.charge("b", {GPU: 2})
    t.uncharge("a", {GPU: 1})
    incremental = {n: {r: v for r, v in t.pool_usage(n).items() if v} for n in t.names()}
    assert incremental == {n: v for n, v in t.recomputed_pool_usage().items()}


def test_undoing_the_release_that_dropped_a_deleted_queue_puts_it_back_deleted():
    t = deleted_team_running(3)
    t.uncharge("a", {GPU: 3})
    t.charge("a", {GPU: 3})  # e.g. a rolled-back eviction
    assert t.is_deleted("a") and t.is_deleted("team")
    assert t.pool_usage("org") == {GPU: 3}


def test_a_placed_charge_beyond_the_minimum_that_passed_is_checked_again():
    t = two_teams()
    assert t.check("a", {GPU: 12}) is None
    assert t.check_placed("a", {GPU: 12}, {GPU: 12}) is None
    short = t.check_placed("a", {GPU: 24}, {GPU: 12})
    assert short is not None and short.resource == GPU and short.allowed == 20
