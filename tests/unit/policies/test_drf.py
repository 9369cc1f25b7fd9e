"""drf: dominant share of borrowing above nominal, weights, siblings level by level, ties by
the next gang, shares recomputed after admissions; and the fast order against a literal
reference implementation of the docstring."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.model import Queue
from controller.engine.state import ClusterState
from policies.ordering import DominantResourceFairness
from tests.builders import cluster, gang, gpu_quota
from tests.unit.policies.test_ordering import Tried, cycle

GPU = "devices/gpu"


def tree(*queues: tuple[str, str | None, int | None, float], nodes: int = 2, gpus: int = 8):
    """Queues as (name, parent, GPU nominal or None for no quota, weight)."""
    return cluster(
        nodes=nodes,
        gpus_per_node=gpus,
        queues=tuple(
            Queue(name, parent, gpu_quota(nominal) if nominal is not None else {}, weight)
            for name, parent, nominal, weight in queues
        ),
    )


def occupy(state: ClusterState, **usage: int) -> None:
    """Admit one running gang per leaf holding that many GPUs (one per pod)."""
    for leaf, n in usage.items():
        state.add_gang(gang(f"run-{leaf}", pods=n, gpus=1, queue=leaf.replace("_", "-")))
    result = Engine(state).cycle()
    result.ledger.commit_all()
    assert len(result.admitted) == len(usage), [d.reason for d in result.decisions]


def offered(state: ClusterState, *pending: tuple[str, str, float], priority: int = 0):
    """The DRF order of (uid, leaf, created) gangs that can never fit (16 GPUs in one pod)."""
    for uid, leaf, created in pending:
        state.add_gang(gang(uid, gpus=16, queue=leaf, created=created, priority=priority))
    tried, admitted = cycle(Engine(state, ordering=Tried(DominantResourceFairness())))
    assert admitted == []
    return tried


def leaves(nominal: int, *names: str, parent: str = "org", weights=None):
    weights = weights or [1.0] * len(names)
    return [(parent, None, None, 1.0)] + [
        (n, parent, nominal, w) for n, w in zip(names, weights, strict=True)
    ]


def test_the_queue_with_the_lowest_dominant_share_goes_first():
    state = tree(*leaves(4, "a", "b", "c"), gpus=6)
    occupy(state, a=6, b=5, c=1)
    shares = DominantResourceFairness().shares(state)
    assert (shares["a"], shares["b"], shares["c"]) == (2 / 12, 1 / 12, 0.0)
    assert offered(state, ("a1", "a", 0), ("b1", "b", 1), ("c1", "c", 2)) == ["c1", "b1", "a1"]


def test_only_borrowing_above_nominal_counts():
    state = tree(("org", None, None, 1.0), ("a", "org", 8, 1.0), ("b", "org", 2, 1.0), gpus=5)
    occupy(state, a=7, b=3)  # a uses more, but within its nominal; b borrows 1
    assert offered(state, ("b1", "b", 0), ("a1", "a", 1)) == ["a1", "b1"]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((1.0, 1.0), ["b1", "a1"]),  # a borrows 3, b 2
        ((2.0, 1.0), ["a1", "b1"]),  # a's 3 count as 1.5
        ((1.0, 0.0), ["a1", "b1"]),  # weight 0: infinite share, last even when borrowing less
    ],
)
def test_weights_divide_the_share(weights, expected):
    state = tree(
        ("org", None, None, 1.0),
        ("a", "org", 2, weights[0]),
        ("b", "org", 2, weights[1]),
        ("c", "org", 8, 1.0),
        gpus=5,
    )
    occupy(state, a=5, b=4, c=1)
    assert offered(state, ("b1", "b", 0), ("a1", "a", 1)) == expected


def test_a_weight_0_queue_within_its_quota_competes_like_any_other():
    state = tree(*leaves(4, "a", "b", weights=[0.0, 1.0]))
    assert DominantResourceFairness().shares(state)["a"] == 0.0
    assert offered(state, ("a1", "a", 0), ("b1", "b", 1), ("a2", "a", 2)) == ["a1", "b1", "a2"]


def test_a_weight_0_queue_that_borrows_goes_only_when_nobody_else_waits():
    state = tree(*leaves(4, "a", "b", "c", weights=[0.0, 1.0, 1.0]))
    occupy(state, a=5, b=4)  # a borrows 1 of c's, b is at its nominal
    assert DominantResourceFairness().shares(state)["a"] == math.inf
    assert offered(state, ("a1", "a", 0), ("a2", "a", 1), ("b1", "b", 2)) == ["b1", "a1", "a2"]


def test_siblings_are_compared_level_by_level_not_as_cousins():
    """org-x borrows nothing as a whole, org-y does: org-x's gangs go first even though
    its leaf x2 borrows more inside org-x than y1 does inside org-y."""
    state = tree(
        ("all", None, None, 1.0),
        ("org-x", "all", None, 1.0),
        ("org-y", "all", None, 1.0),
        ("x1", "org-x", 4, 1.0),
        ("x2", "org-x", 4, 1.0),
        ("y1", "org-y", 4, 1.0),
        ("y2", "org-y", 4, 1.0),
    )
    occupy(state, x2=7, y1=5, y2=4)
    shares = DominantResourceFairness().shares(state)
    assert (shares["org-x"], shares["org-y"], shares["x2"], shares["y1"]) == (
        0,
        1 / 16,
        3 / 8,
        1 / 8,
    )
    assert offered(state, ("y1-gang", "y1", 0), ("x2-gang", "x2", 1)) == ["x2-gang", "y1-gang"]


def test_ties_go_to_the_lower_order_key_of_the_gang_each_side_would_give():
    state = tree(*leaves(8, "a", "b"))
    state.add_gang(gang("urgent", gpus=16, queue="a", created=5, priority=10))
    assert offered(state, ("a0", "a", 0), ("b1", "b", 1), ("a2", "a", 2), ("b3", "b", 3)) == [
        "urgent",
        "a0",
        "b1",
        "a2",
        "b3",
    ]


def test_a_tied_subtree_competes_with_the_gang_its_own_descent_would_give():
    """Roots r1 and r2 tie; inside r1, p (share 0) goes before q (borrowing). r1 offers
    p's gang (created 5) against r2's (created 3), so r2's goes first; q's old gang
    (created 1) only comes after p is done."""
    state = tree(
        ("r1", None, None, 1.0),
        ("p", "r1", 4, 1.0),
        ("q", "r1", 4, 1.0),
        ("r2", None, None, 1.0),
        ("r", "r2", 4, 1.0),
    )
    occupy(state, q=5)
    assert offered(state, ("p5", "p", 5), ("q1", "q", 1), ("r3", "r", 3)) == ["r3", "p5", "q1"]


def test_shares_are_recomputed_after_an_admission_within_the_cycle():
    state = tree(*leaves(2, "a", "b"), nodes=1)
    for uid, leaf, gpus, created in [("a1", "a", 3, 0), ("a2", "a", 1, 1), ("b1", "b", 1, 2)]:
        state.add_gang(gang(uid, gpus=gpus, queue=leaf, created=created))
    tried, admitted = cycle(Engine(state, ordering=Tried(DominantResourceFairness())))
    assert tried == ["a1", "b1", "a2"]  # a1 makes a borrow, so b goes before a2
    assert admitted == ["a1", "b1"]


def test_a_root_above_a_shrunk_quota_still_has_share_0():
    state = tree(("solo", None, 8, 1.0), ("other", None, 8, 1.0))
    occupy(state, solo=6)
    state.upsert_queue(Queue("solo", quota=gpu_quota(2)))  # now 4 above nominal
    assert DominantResourceFairness().shares(state) == {"other": 0.0, "solo": 0.0}
    assert offered(state, ("solo1", "solo", 0), ("other1", "other", 1)) == ["solo1", "other1"]


def test_for_one_queue_drf_offers_that_queues_gangs_by_priority_then_created():
    state = tree(*leaves(8, "a", "b"))
    for uid, leaf, priority, created in [
        ("a-old", "a", 0, 0),
        ("b", "b", 9, 0),
        ("a-hi", "a", 5, 1),
    ]:
        state.add_gang(gang(uid, gpus=16, queue=leaf, priority=priority, created=created))
    ctx = CycleContext(state, None, None, None)  # type: ignore[arg-type]
    assert [g.uid for g in DominantResourceFairness().order(ctx, "a")] == ["a-hi", "a-old"]


# ---- against a literal implementation -------------------------------------------------
class LiteralDrf:
    """The docstring, step by step: descend from the top by (share, next gang's order_key),
    take that leaf's next gang, recompute shares after an admission."""

    name = "literal-drf"

    def __init__(self) -> None:
        self.shares = DominantResourceFairness().shares
        self.admitted = False

    def order(self, ctx, queue=None):
        state = ctx.state
        quota = state.quota
        left = {q: list(state.pending_in_order(q)) for q in state.pending_queues()}
        shares = self.shares(state)

        def children(node):
            if node is not None:
                return quota.children(node)
            roots = [n for n in quota.names() if quota.path(n)[-1] == n]
            return sorted(set(roots) | {q for q in left if quota.get(q) is None})

        def pick(node):
            best = None
            if node is not None and left.get(node):
                best = ((-math.inf, left[node][0].order_key), node)
            for child in children(node):
                found = pick(child)
                if found is not None:
                    key = (shares.get(child, 0.0), found[0][1])
                    if best is None or key < best[0]:
                        best = (key, found[1])
            return best

        while (found := pick(None)) is not None:
            gang = left[found[1]].pop(0)
            self.admitted = False
            yield gang
            if self.admitted:
                shares = self.shares(state)

    def observe(self, gang, admitted):
        self.admitted = self.admitted or admitted


def random_world(seed: int) -> ClusterState:
    rng = random.Random(seed)
    queues: list[Queue] = []
    names: list[str] = []
    for r in range(rng.randint(1, 3)):
        stack = [(f"r{r}", None, 0)]
        while stack:
            name, parent, depth = stack.pop()
            kids = rng.randint(0, 3) if depth < 2 else 0
            nominal = rng.choice([None, 0, 2, 4, 8]) if depth else rng.choice([None, 4])
            quota = gpu_quota(nominal) if nominal is not None else {}
            queues.append(Queue(name, parent, quota, rng.choice([1.0, 1.0, 2.0, 0.5, 0.0])))
            if not kids:
                names.append(name)
            stack.extend((f"{name}.{k}", name, depth + 1) for k in range(kids))
    state = cluster(nodes=rng.randint(1, 3), gpus_per_node=8, queues=tuple(queues))
    for i in range(rng.randint(5, 60)):
        state.add_gang(
            gang(
                f"g{i:03d}",
                pods=rng.randint(1, 2),
                gpus=rng.choice([1, 1, 2, 4, 8]),
                queue=rng.choice([*names, "nowhere"] if rng.random() < 0.05 else names),
                priority=rng.choice([0, 0, 0, 5]),
                created=float(rng.randint(0, 40)),
            )
        )
    return state


@pytest.mark.parametrize("seed", range(150))
def test_the_fast_order_is_the_literal_order(seed):
    rng = random.Random(1000 + seed)
    fast = Engine(random_world(seed), ordering=Tried(DominantResourceFairness()))
    literal = Engine(random_world(seed), ordering=Tried(LiteralDrf()))
    for step in range(6):  # cycles with and without releases (the kept order) in between
        assert cycle(fast, now=step) == cycle(literal, now=step)
        running = sorted(fast.state.admitted)
        for uid in rng.sample(running, k=min(len(running), rng.choice([0, 0, 1, 2, 3]))):
            requeue = rng.random() < 0.5
            for engine in (fast, literal):
                engine.state.release(uid, requeue=requeue)
        pending = sorted(fast.state.pending)
        change = rng.choice(["none", "none", "arrive", "delete", "reprioritise"])
        if change == "none" or (not pending and change != "arrive"):
            continue
        if change == "arrive":
            queue = rng.choice(sorted({g.queue for g in fast.state.pending.values()} or {"r0"}))
            new = gang(f"new-{step}", gpus=rng.choice([1, 8]), queue=queue, created=step)
        else:
            uid = rng.choice(pending)
            new = dataclasses.replace(fast.state.pending[uid], priority=rng.choice([0, 5, 9]))
        for engine in (fast, literal):
            if change == "delete":
                engine.state.remove_gang(new.uid)
            else:
                engine.state.add_gang(new)
