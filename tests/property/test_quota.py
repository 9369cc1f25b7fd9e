"""Property 4: quota check / headroom agree with brute force and an independent model."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.engine.errors import InvalidInput
from controller.engine.model import Queue
from controller.engine.quota import QuotaTree
from tests.property.harness import (
    QuotaOracle,
    add_usage,
    nonzero,
    property_settings,
    quota_bookkeeping_problems,
)
from tests.property.strategies import QUOTA_RESOURCES, queue_trees, quota_charges

TreeAndSteps = tuple[
    tuple[tuple[Queue, ...], tuple[str, ...]], list[tuple[str, dict[str, int], bool]]
]

trees_with_steps = queue_trees().flatmap(
    lambda tree: st.tuples(st.just(tree), quota_charges(tree[1], max_size=16))
)


def brute_force(tree: QuotaTree, leaf: str, charge: Mapping[str, int]) -> tuple[bool, list[str]]:
    """Charge, look at the violations, uncharge; also report bookkeeping drift."""
    before = {n: nonzero(tree.pool_usage(n)) for n in tree.names()}
    tree.charge(leaf, charge)
    try:
        ok = tree.violations() == []
        drift = quota_bookkeeping_problems(tree)
    finally:
        tree.uncharge(leaf, charge)
    after = {n: nonzero(tree.pool_usage(n)) for n in tree.names()}
    if before != after:
        drift.append(f"charge+uncharge {dict(charge)} on {leaf} changed pool usage")
    return ok, drift


def tree_of(queues: tuple[Queue, ...]) -> QuotaTree:
    tree = QuotaTree()
    for q in queues:
        tree.upsert(q)
    return tree


def returnable(
    usage: Mapping[str, Mapping[str, int]], leaf: str, charge: Mapping[str, int]
) -> dict[str, int]:
    """What of `charge` the leaf can give back: at most what it uses of each resource."""
    have = usage.get(leaf, {})
    return nonzero({r: min(v, have.get(r, 0)) for r, v in charge.items()})


def headrooms(tree: QuotaTree) -> dict[tuple[str, str], tuple[int | None, str]]:
    return {(n, r): tree.headroom(n, r) for n in tree.names() for r in QUOTA_RESOURCES}


@property_settings(400)
@given(trees_with_steps)
def test_quota_check_and_headroom_agree_with_brute_force(case: TreeAndSteps) -> None:
    """For random trees and usage: `check(leaf, charge) is None` iff charging it leaves no
    violation (engine's `violations()` after the charge, and an independent from-scratch
    model of quota.py's rules), and `headroom(leaf, r)` is the largest amount that passes."""
    (queues, leaves), steps = case
    tree = tree_of(queues)
    oracle = QuotaOracle({q.name: q for q in queues})
    usage: dict[str, dict[str, int]] = {}
    for leaf, charge, uncharge in steps:
        if uncharge:
            give = returnable(usage, leaf, charge)
            if give:
                tree.uncharge(leaf, give)
                usage = add_usage(usage, leaf, give, -1)
        else:
            allowed = tree.check(leaf, charge) is None
            engine_ok, drift = brute_force(tree, leaf, charge)
            model_ok = oracle.valid(add_usage(usage, leaf, charge))
            assert drift == []
            assert (allowed, engine_ok, model_ok) in ((True, True, True), (False, False, False)), (
                f"check {allowed}, violations-after-charge empty {engine_ok}, "
                f"model {model_ok} for {charge} on {leaf} with usage {usage}"
            )
            if allowed:
                tree.charge(leaf, charge)
                usage = add_usage(usage, leaf, charge)
        assert {n: nonzero(tree.pool_usage(n)) for n in tree.names()} == oracle.pools(usage)
    for leaf in leaves:
        managed = {
            r for root in oracle.roots() if leaf in oracle.tree(root) for r in oracle.managed(root)
        }
        for r in (*QUOTA_RESOURCES, "memory"):
            room, _ = tree.headroom(leaf, r)
            if room is None:
                assert r not in managed, f"headroom({leaf}, {r}) unlimited but {r} is managed"
                assert brute_force(tree, leaf, {r: 10**9})[0]
                continue
            assert r in managed, f"headroom({leaf}, {r}) = {room} but {r} is not managed"
            assert room >= 0
            if room > 0:
                assert tree.check(leaf, {r: room}) is None
                ok, _ = brute_force(tree, leaf, {r: room})
                assert ok, f"headroom({leaf}, {r}) = {room} but charging it violates"
                assert oracle.valid(add_usage(usage, leaf, {r: room}))
            assert tree.check(leaf, {r: room + 1}) is not None
            ok, _ = brute_force(tree, leaf, {r: room + 1})
            assert not ok, f"headroom({leaf}, {r}) = {room} but {room + 1} fits"
            assert not oracle.valid(add_usage(usage, leaf, {r: room + 1}))


def tree_state(tree: QuotaTree) -> object:
    names = tree.names()
    return (
        {n: tree.get(n) for n in names},
        {n: tree.children(n) for n in names},
        {n: nonzero(tree.pool_usage(n)) for n in names},
        headrooms(tree),
    )


def descendants(specs: Mapping[str, Queue], name: str) -> set[str]:
    out = {name}
    grew = True
    while grew:
        more = {n for n, q in specs.items() if q.parent in out} - out
        grew = bool(more)
        out |= more
    return out


@property_settings(200)
@given(trees_with_steps, st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=6))
def test_queue_moves_take_usage_along_and_cycles_change_nothing(
    case: TreeAndSteps, moves: list[tuple[int, int]]
) -> None:
    """Re-parenting a queue under its own subtree raises InvalidInput and changes nothing;
    any other move keeps the incremental pool usage equal to the recomputed one and to the
    independent model of the new tree (a moved queue takes its usage along)."""
    (queues, _), steps = case
    tree = tree_of(queues)
    usage: dict[str, dict[str, int]] = {}
    for leaf, charge, _ in steps:
        managed = {r: v for r, v in charge.items() if r in QUOTA_RESOURCES}
        if managed and tree.check(leaf, managed) is None:
            tree.charge(leaf, managed)
            usage = add_usage(usage, leaf, managed)
    specs = {q.name: q for q in queues}
    for qi, pi in moves:
        names = sorted(specs)
        name = names[qi % len(names)]
        parent = [None, *names][pi % (len(names) + 1)]
        if parent == name:
            continue  # Queue() itself refuses this
        moved = Queue(name, parent, specs[name].quota)
        if parent in descendants(specs, name):
            before = tree_state(tree)
            with pytest.raises(InvalidInput):
                tree.upsert(moved)
            assert tree_state(tree) == before, f"refused move of {name} under {parent}"
            continue
        if parent is not None and tree.is_leaf(parent) and any(usage.get(parent, {}).values()):
            continue  # a leaf holding usage would become inner: see test_counterexamples
        tree.upsert(moved)
        specs[name] = moved
        assert quota_bookkeeping_problems(tree) == [], f"after moving {name} under {parent}"
        engine = {n: nonzero(tree.pool_usage(n)) for n in tree.names()}
        assert engine == QuotaOracle(specs).pools(usage), f"after moving {name} under {parent}"


def fresh_headroom(
    queues: tuple[Queue, ...], usage: Mapping[str, Mapping[str, int]]
) -> dict[tuple[str, str], tuple[int | None, str]]:
    tree = tree_of(queues)
    for leaf, used in usage.items():
        if nonzero(dict(used)):
            tree.charge(leaf, used)
    return headrooms(tree)


@property_settings(200)
@given(trees_with_steps)
def test_a_kept_headroom_is_the_one_computed_afresh_after_any_charges(case: TreeAndSteps) -> None:
    """Headroom answers are kept until a charge moves a pool they read: after every step
    (every answer asked, so kept ones are read back), each equals a fresh tree's."""
    (queues, _), steps = case
    tree = tree_of(queues)
    usage: dict[str, dict[str, int]] = {}
    for leaf, charge, uncharge in steps:
        if uncharge:
            give = returnable(usage, leaf, charge)
            if not give:
                continue
            tree.uncharge(leaf, give)
            usage = add_usage(usage, leaf, give, -1)
        elif tree.check(leaf, charge) is None:
            tree.charge(leaf, charge)
            usage = add_usage(usage, leaf, charge)
        assert headrooms(tree) == fresh_headroom(queues, usage)
