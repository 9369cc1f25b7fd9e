"""Preemption policies (none, priority, reclaim, fair-share, cost-aware), the shared
minimal-victim search: one behaviour per test (shares: test_shares.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.engine.context import CycleContext
from controller.engine.cycle import Decision, Engine, Outcome
from controller.engine.ledger import Ledger
from controller.engine.model import Queue
from controller.engine.placement import Placer
from controller.engine.policy import BinPack, NoPreemption
from policies import registry
from policies.preemption import (
    CostAwarePreemption,
    FairSharePreemption,
    PriorityPreemption,
    ReclaimPreemption,
    minimal_victims,
    work_lost,
)
from policies.registry import UnknownPolicy
from policies.shares import dominant_share
from tests.builders import GPU, cluster, gang, gpu_quota

GPUS = f"devices/{GPU}"


def setup(policy, nodes=1, queues=None):
    state = cluster(nodes=nodes, queues=queues)
    return state, Engine(state, preemption=policy)


def admit(engine, now, *gangs):
    """Admit `gangs` at time `now` (they must fit without preemption)."""
    for g in gangs:
        engine.state.add_gang(g)
    result = engine.cycle(now=now)
    result.ledger.commit_all()
    assert {g.uid for g in gangs} <= set(engine.state.admitted)
    assert not any(d.victims for d in result.decisions)


def arrive(engine, now, preemptor) -> Decision:
    """Submit `preemptor` at `now`, run a cycle, commit; its decision."""
    engine.state.add_gang(preemptor)
    result = engine.cycle(now=now)
    result.ledger.commit_all()
    return next(d for d in result.decisions if d.gang_uid == preemptor.uid)


def context(engine, ledger=None):
    """A cycle context on the engine's state, as the cycle builds it."""
    state = engine.state
    return CycleContext(state, ledger or Ledger(state), Placer(state, BinPack(), 8), engine.plan)


def tree(*leaves, root="org"):
    """A root without quota of its own and leaves (name, nominal GPUs[, weight])."""
    out = [Queue(root)]
    for name, nominal, *weight in leaves:
        out.append(Queue(name, root, gpu_quota(nominal), weight=weight[0] if weight else 1.0))
    return tuple(out)


# ---- registry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cls"),
    [
        ("none", NoPreemption),
        ("priority", PriorityPreemption),
        ({"name": "priority", "params": {"scope": "cluster"}}, PriorityPreemption),
        ({"name": "reclaim", "params": {"priority": "lower"}}, ReclaimPreemption),
        (
            {"name": "fair-share", "params": {"strategies": ["LessThanInitialShare"]}},
            FairSharePreemption,
        ),
        (
            {"name": "cost-aware", "params": {"default_min_runtime_seconds": 600}},
            CostAwarePreemption,
        ),
    ],
)
def test_every_preemption_policy_is_selectable_by_name(ref, cls):
    policy = registry.create_preemption(ref)
    assert type(policy) is cls
    assert policy.name == (ref if isinstance(ref, str) else ref["name"])


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"name": "priority", "params": {"scope": "galaxy"}}, "scope"),
        ({"name": "priority", "params": {"max_probes": 0}}, "max_probes"),
        ({"name": "reclaim", "params": {"priority": "higher"}}, "priority"),
        ({"name": "fair-share", "params": {"strategies": []}}, "strategies"),
        ({"name": "fair-share", "params": {"strategies": ["Nicest"]}}, "strategies"),
        ({"name": "cost-aware", "params": {"default_checkpoint_seconds": 0}}, "checkpoint"),
        ({"name": "none", "params": {"scope": "queue"}}, "takes no parameters"),
    ],
)
def test_bad_preemption_parameters_are_refused_naming_the_parameter(ref, message):
    with pytest.raises(UnknownPolicy, match=message):
        registry.create_preemption(ref)


# ---- none -------------------------------------------------------------------------------


def test_none_never_evicts():
    state, engine = setup(registry.create_preemption("none"))
    admit(engine, 0, gang("low", gpus=8))
    d = arrive(engine, 10, gang("high", gpus=8, priority=9))
    assert d.outcome is Outcome.PENDING and "low" in state.admitted


# ---- the shared search ------------------------------------------------------------------


def full_node(engine, sizes):
    """One 8-GPU node filled with gangs g<i> of the given GPU counts, admitted at 0."""
    gangs = [gang(f"g{i}", gpus=n, created=i) for i, n in enumerate(sizes)]
    admit(engine, 0, *gangs)
    return gangs


def no_cost(g):
    return 0.0


@pytest.mark.parametrize(
    ("sizes", "need", "expected"),
    [
        ([1, 4, 3], 4, {"g1"}),  # greedy in order takes g0+g1; g0 is not needed
        ([6, 1, 1], 2, {"g1", "g2"}),  # two small ones free fewer devices than g0
        ([2, 2, 2, 2], 4, {"g0", "g1"}),
        ([8], 8, {"g0"}),
    ],
)
def test_minimal_victims_keeps_only_victims_the_gang_needs(sizes, need, expected):
    _, engine = setup(NoPreemption())
    candidates = full_node(engine, sizes)
    ctx = context(engine)
    g = gang("p", gpus=need)
    chosen = minimal_victims(ctx, g, candidates, no_cost)
    assert set(chosen) == expected
    assert ctx.fits(g, chosen)
    assert all(not ctx.fits(g, [u for u in chosen if u != v]) for v in chosen)


def test_minimal_victims_returns_nothing_when_all_candidates_are_not_enough():
    _, engine = setup(NoPreemption())
    candidates = full_node(engine, [4, 4])
    assert minimal_victims(context(engine), gang("p", gpus=16), candidates, no_cost) == []


@pytest.mark.parametrize("max_probes", [1, 2, 3, 5, 32])
def test_minimal_victims_asks_at_most_max_probes_and_returns_only_fitting_sets(max_probes):
    _, engine = setup(NoPreemption())
    candidates = full_node(engine, [1, 1, 1, 1, 1, 1, 1, 1])
    ctx = context(engine)
    g = gang("p", gpus=3)
    chosen = minimal_victims(ctx, g, candidates, no_cost, max_probes=max_probes)
    assert ctx.probes <= max_probes + 1  # + the check below
    assert chosen == [] or ctx.fits(g, chosen)


def test_minimal_victims_uses_only_sets_the_policy_admits():
    _, engine = setup(NoPreemption())
    candidates = full_node(engine, [4, 2, 2])
    ctx = context(engine)

    def without_g0(seq):
        return [c for c in seq if c.uid != "g0"]

    chosen = minimal_victims(ctx, gang("p", gpus=4), candidates, no_cost, admissible=without_g0)
    assert set(chosen) == {"g1", "g2"}


def test_minimal_victims_skips_gangs_admitted_or_evicted_in_this_cycle():
    state, engine = setup(NoPreemption())
    state.add_gang(gang("fresh", gpus=8))
    result = engine.cycle(now=0)  # not committed: "fresh" is an open admission
    ctx = context(engine, result.ledger)
    assert not ctx.evictable("fresh")
    assert minimal_victims(ctx, gang("p", gpus=8), [state.admitted_gangs["fresh"]], no_cost) == []


@pytest.mark.parametrize(
    ("admitted_at", "now", "checkpoint", "expected"),
    [
        (0, 100, None, 400.0),  # 4 devices x 100 s
        (0, 100, 30, 40.0),  # 10 s since the checkpoint at 90
        (50, 50, 30, 0.0),
    ],
)
def test_work_lost_is_device_seconds_since_admission_or_last_checkpoint(
    admitted_at, now, checkpoint, expected
):
    state, engine = setup(NoPreemption())
    admit(engine, admitted_at, gang("g", gpus=4))
    state.now = now
    assert work_lost(state, "g", checkpoint) == expected


# ---- priority ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("victim_priority", "evicted"),
    [(4, True), (5, False), (6, False)],
)
def test_priority_never_evicts_equal_or_higher_priority(victim_priority, evicted):
    _, engine = setup(PriorityPreemption())
    admit(engine, 0, gang("low", gpus=8, priority=victim_priority))
    d = arrive(engine, 10, gang("high", gpus=8, priority=5))
    assert (d.outcome is Outcome.ADMITTED) is evicted
    assert d.victims == (("low",) if evicted else ())


@pytest.mark.parametrize(("scope", "evicted"), [("queue", False), ("cluster", True)])
def test_priority_scope_decides_whether_other_queues_gangs_are_victims(scope, evicted):
    _, engine = setup(PriorityPreemption(scope=scope), queues=(Queue("a"), Queue("b")))
    admit(engine, 0, gang("other", gpus=8, queue="b"))
    d = arrive(engine, 10, gang("high", gpus=8, priority=5, queue="a"))
    assert d.victims == (("other",) if evicted else ())


def test_priority_picks_the_set_freeing_fewest_devices():
    _, engine = setup(PriorityPreemption())
    admit(engine, 0, gang("big", gpus=6), gang("s1", gpus=1, priority=1), gang("s2", gpus=1))
    d = arrive(engine, 10, gang("high", gpus=2, priority=5))
    assert set(d.victims) == {"s1", "s2"}  # 2 devices rather than "big"'s 6


@pytest.mark.parametrize(
    ("old_checkpoint", "evicted"),
    [
        (None, "new"),  # old: 4 x 200 s lost, new: 4 x 100 s
        (60, "old"),  # old: only 20 s since its checkpoint at 180
    ],
)
def test_priority_prefers_least_work_lost_among_equal_sized_sets(old_checkpoint, evicted):
    _, engine = setup(PriorityPreemption())
    admit(engine, 0, replace(gang("old", gpus=4), checkpoint_interval=old_checkpoint))
    admit(engine, 100, gang("new", gpus=4))
    d = arrive(engine, 200, gang("high", gpus=4, priority=5))
    assert d.victims == (evicted,)


def test_priority_prefers_the_lowest_priority_among_equal_cost_sets():
    _, engine = setup(PriorityPreemption())
    admit(engine, 0, gang("p2", gpus=4, priority=2), gang("p1", gpus=4, priority=1))
    d = arrive(engine, 100, gang("high", gpus=4, priority=5))
    assert d.victims == ("p1",)


def test_priority_prefers_the_newest_among_otherwise_equal_sets():
    _, engine = setup(PriorityPreemption())
    every = 100.0
    admit(engine, 0, replace(gang("older", gpus=4), checkpoint_interval=every))
    admit(engine, 100, replace(gang("newer", gpus=4), checkpoint_interval=every))
    d = arrive(engine, 150, gang("high", gpus=4, priority=5))  # both lost 4 x 50 s
    assert d.victims == ("newer",)


def test_priority_evicts_whole_multi_pod_gangs():
    state, engine = setup(PriorityPreemption(), nodes=2)
    admit(engine, 0, gang("wide", pods=2, gpus=8))
    d = arrive(engine, 10, gang("high", gpus=4, priority=5))
    assert d.victims == ("wide",) and "wide" in state.pending
    assert state.violations() == []
    assert (
        sum(len(c.devices) for r in state.admitted.values() for p in r.pods for c in p.claims) == 4
    )


def test_priority_evicts_nothing_when_evicting_all_candidates_would_not_be_enough():
    state, engine = setup(PriorityPreemption())
    admit(engine, 0, gang("low", gpus=8))
    d = arrive(engine, 10, gang("huge", pods=2, gpus=8, priority=5))
    assert d.outcome is Outcome.PENDING and "would not be enough" not in d.reason
    assert "low" in state.admitted


@pytest.mark.parametrize(
    ("running", "scope", "expected"),
    [
        ([], "queue", False),
        ([("a", 5)], "queue", False),  # equal priority
        ([("b", 0)], "queue", False),  # lower, but another queue
        ([("b", 0)], "cluster", True),
        ([("a", 0)], "queue", True),
    ],
)
def test_priority_could_help_only_when_a_lower_priority_gang_runs_in_scope(
    running, scope, expected
):
    policy = PriorityPreemption(scope=scope)
    state, engine = setup(policy, nodes=2, queues=(Queue("a"), Queue("b")))
    for i, (queue, prio) in enumerate(running):
        admit(engine, 0, gang(f"r{i}", gpus=8, queue=queue, priority=prio))
    assert policy.could_help(state, gang("p", gpus=8, queue="a", priority=5)) is expected


def test_priority_could_help_follows_admissions_and_releases():
    policy = PriorityPreemption()
    state, engine = setup(policy)
    high = gang("p", gpus=8, priority=5)
    assert not policy.could_help(state, high)
    admit(engine, 0, gang("low", gpus=4))
    assert policy.could_help(state, high)
    state.remove_gang("low")
    assert not policy.could_help(state, high)


def test_priority_could_help_sees_admissions_followed_by_what_if_probes():
    policy = PriorityPreemption()
    state, engine = setup(policy)
    admit(engine, 0, gang("high", gpus=4, priority=9))
    preemptor = gang("p", gpus=8, priority=5)
    assert not policy.could_help(state, preemptor)
    admit(engine, 1, gang("low", gpus=4))
    assert not context(engine).fits(preemptor, ["high"])  # reorders the admitted gangs
    assert policy.could_help(state, preemptor)


# ---- reclaim ----------------------------------------------------------------------------


def borrowed_by_a(policy, b_priority=-1):
    """org{a: 8, b: 4, c: 4} on 16 GPUs: a runs 12 (borrows 4), b runs 4 (its nominal,
    newest and lowest priority: a priority policy would pick it)."""
    state, engine = setup(policy, nodes=2, queues=tree(("a", 8), ("b", 4), ("c", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=4, queue="a") for i in range(3)))
    admit(engine, 10, gang("b0", gpus=4, queue="b", priority=b_priority))
    return state, engine


def test_reclaim_takes_back_only_from_borrowing_queues():
    state, engine = borrowed_by_a(ReclaimPreemption())
    d = arrive(engine, 20, gang("c0", gpus=4, queue="c"))
    assert d.outcome is Outcome.ADMITTED
    assert len(d.victims) == 1 and d.victims[0].startswith("a")
    assert "b0" in state.admitted


def test_reclaim_does_not_apply_when_the_preemptor_would_exceed_its_nominal():
    policy = ReclaimPreemption()
    state, engine = borrowed_by_a(policy)
    greedy = gang("c0", gpus=8, queue="c")  # c's nominal is 4
    assert not policy.could_help(state, greedy)
    assert arrive(engine, 20, greedy).outcome is Outcome.PENDING


def test_reclaim_stops_taking_from_a_queue_once_it_no_longer_borrows():
    # Quota is generous (24 GPUs of nominal on 16 GPUs): nodes are what binds.
    state, engine = setup(ReclaimPreemption(), nodes=2, queues=tree(("a", 8), ("b", 8), ("c", 8)))
    admit(engine, 0, *(gang(f"a{i}", gpus=2, queue="a") for i in range(5)))  # borrows 2
    admit(engine, 0, *(gang(f"b{i}", gpus=2, queue="b") for i in range(3)))
    d = arrive(engine, 10, gang("c0", gpus=4, queue="c"))
    # Only one of a's gangs may go (a second would take a below its nominal): not enough.
    assert d.outcome is Outcome.PENDING and len(state.admitted) == 8


def test_reclaim_ignores_queues_of_other_trees():
    queues = (
        Queue("x", quota=gpu_quota(8)),
        Queue("a", "x", gpu_quota(0)),  # borrows all it runs from x
        Queue("y"),
        Queue("c", "y", gpu_quota(8)),
    )
    state, engine = setup(ReclaimPreemption(), queues=queues)
    admit(engine, 0, gang("a0", gpus=8, queue="a"))
    d = arrive(engine, 10, gang("c0", gpus=8, queue="c"))
    assert d.outcome is Outcome.PENDING and "a0" in state.admitted


@pytest.mark.parametrize(
    ("priority", "victim_priority", "evicted"),
    [("any", 9, True), ("lower", 9, False), ("lower", 0, True)],
)
def test_reclaim_priority_lower_also_requires_lower_priority(priority, victim_priority, evicted):
    _, engine = setup(ReclaimPreemption(priority=priority), queues=tree(("a", 0), ("c", 8)))
    admit(engine, 0, gang("a0", gpus=8, queue="a", priority=victim_priority))
    d = arrive(engine, 10, gang("c0", gpus=8, queue="c", priority=5))
    assert d.victims == (("a0",) if evicted else ())


@pytest.mark.parametrize(
    ("a_runs", "c_wants", "expected"),
    [
        (8, 4, True),  # a borrows 4, c stays within 4
        (4, 4, False),  # a within its nominal: nobody borrows
        (8, 8, False),  # c would exceed its nominal
    ],
)
def test_reclaim_could_help_only_for_queues_within_nominal_with_borrowers(
    a_runs, c_wants, expected
):
    policy = ReclaimPreemption()
    state, engine = setup(policy, nodes=2, queues=tree(("a", 4), ("c", 4)))
    admit(engine, 0, *(gang(f"a{i}", gpus=4, queue="a") for i in range(a_runs // 4)))
    assert policy.could_help(state, gang("c0", gpus=c_wants, queue="c")) is expected


# ---- fair-share -------------------------------------------------------------------------


def test_fair_share_preempts_from_the_queue_above_its_share():
    _, engine = setup(FairSharePreemption(), nodes=2, queues=tree(("a", 8), ("b", 8)))
    admit(engine, 0, *(gang(f"a{i}", gpus=4, queue="a") for i in range(4)))  # share 0.5
    d = arrive(engine, 10, gang("b0", gpus=4, queue="b"))
    assert d.outcome is Outcome.ADMITTED and len(d.victims) == 1


def between_shares(strategies, b_wants=4):
    """org{a: 8, b: 8, c: 8} on 24 GPUs, c idle: a runs two 8-GPU gangs (share 8/24), b
    runs two 4-GPU gangs and wants `b_wants` more (share after b_wants/24). Evicting one
    of a's gangs leaves a at its nominal (share 0)."""
    policy = FairSharePreemption(strategies=strategies)
    state, engine = setup(policy, nodes=3, queues=tree(("a", 8), ("b", 8), ("c", 8)))
    admit(engine, 0, *(gang(f"a{i}", gpus=8, queue="a") for i in range(2)))
    admit(engine, 0, *(gang(f"b{i}", gpus=4, queue="b") for i in range(2)))
    return state, engine


def test_fair_share_refuses_when_victim_share_would_drop_below_preemptor():
    state, engine = between_shares(("LessThanOrEqualToFinalShare",))
    d = arrive(engine, 10, gang("b2", gpus=4, queue="b"))
    assert d.outcome is Outcome.PENDING and len(state.admitted) == 4


@pytest.mark.parametrize(
    "strategies",
    [
        ("LessThanInitialShare",),
        ("LessThanOrEqualToFinalShare", "LessThanInitialShare"),
    ],
)
def test_fair_share_less_than_initial_share_allows_preemptor_below_victims_share_before(
    strategies,
):
    _, engine = between_shares(strategies)
    d = arrive(engine, 10, gang("b2", gpus=4, queue="b"))
    assert d.outcome is Outcome.ADMITTED and len(d.victims) == 1
    assert d.victims[0] in ("a0", "a1")


def test_fair_share_less_than_initial_share_spares_gangs_preempted_before():
    state, engine = between_shares(("LessThanInitialShare",))
    for uid in ("a0", "a1"):  # preempted once, at 5, and admitted again at 6
        state.now = 5
        state.release(uid, requeue=True)
    engine.cycle(now=6).ledger.commit_all()
    assert {"a0", "a1"} <= set(state.admitted)
    assert arrive(engine, 10, gang("b2", gpus=4, queue="b")).outcome is Outcome.PENDING


def test_fair_share_less_than_initial_share_compares_with_the_share_before_each_eviction():
    # a runs four 4-GPU gangs: b needs two of them. Its share after (6/24) is below a's
    # now (8/24), but not below a's share once the first is gone (4/24).
    policy = FairSharePreemption(strategies=("LessThanInitialShare",))
    _, engine = setup(policy, nodes=3, queues=tree(("a", 8), ("b", 8), ("c", 8)))
    admit(engine, 0, *(gang(f"a{i}", gpus=4, queue="a") for i in range(4)))
    admit(engine, 0, *(gang(f"b{i}", gpus=4, queue="b") for i in range(2)))
    assert arrive(engine, 10, gang("b2", gpus=6, queue="b")).outcome is Outcome.PENDING


def test_fair_share_less_than_initial_share_never_takes_a_queue_below_its_nominal():
    # org{a: 11, b: 5} on 16 GPUs: a runs 14 (share 3/16), b runs 2 and wants 4 (share
    # after 1/16 < 3/16), but any 4-GPU gang of a would leave a at 10, below its 11.
    policy = FairSharePreemption(strategies=("LessThanInitialShare",))
    state, engine = setup(policy, nodes=2, queues=tree(("a", 11), ("b", 5)))
    admit(engine, 0, *(gang(f"a{i}", gpus=4, queue="a") for i in range(3)))
    admit(engine, 0, gang("a3", gpus=2, queue="a"), gang("b0", gpus=2, queue="b"))
    d = arrive(engine, 10, gang("b1", gpus=4, queue="b"))
    assert d.outcome is Outcome.PENDING and len(state.admitted) == 5


def test_fair_share_refuses_when_preemptor_would_not_stay_below_victims_initial_share():
    # org{a: 10, b: 6}: a runs 12 (share 2/16), b runs 4 and wants 4 (share after 2/16).
    state, engine = setup(FairSharePreemption(), nodes=2, queues=tree(("a", 10), ("b", 6)))
    admit(engine, 0, *(gang(f"a{i}", gpus=4, queue="a") for i in range(3)))
    admit(engine, 0, gang("b0", gpus=4, queue="b"))
    d = arrive(engine, 10, gang("b1", gpus=4, queue="b"))
    assert d.outcome is Outcome.PENDING and len(state.admitted) == 4


def test_fair_share_never_takes_from_queues_within_their_nominal():
    policy = FairSharePreemption()
    state, engine = setup(policy, nodes=2, queues=tree(("a", 8), ("b", 8)))
    admit(engine, 0, *(gang(f"{q}{i}", gpus=4, queue=q) for q in "ab" for i in range(2)))
    high = gang("b2", gpus=4, queue="b")
    assert not policy.could_help(state, high)
    assert arrive(engine, 10, high).outcome is Outcome.PENDING


def test_fair_share_preempts_lower_priority_within_its_own_queue():
    _, engine = setup(FairSharePreemption(), nodes=2, queues=tree(("a", 8), ("b", 8)))
    admit(engine, 0, *(gang(f"a{i}", gpus=4, queue="a") for i in range(2)))
    admit(engine, 0, gang("b0", gpus=4, queue="b"), gang("b1", gpus=4, queue="b", priority=-1))
    d = arrive(engine, 10, gang("b2", gpus=4, queue="b", priority=5))
    assert d.victims == ("b1",)


@pytest.mark.parametrize(
    ("policy", "evicted"),
    [(FairSharePreemption(), False), (PriorityPreemption(), True)],
)
def test_fair_share_never_raises_its_queues_share_by_evicting_its_own_gangs(policy, evicted):
    # org{a: 10, b: 4, c: 10} on 24 GPUs: b runs 4 (its nominal); its 8-GPU gang would
    # fit in place of its 4-GPU one, but b would then borrow 4.
    _, engine = setup(policy, nodes=3, queues=tree(("a", 10), ("b", 4), ("c", 10)))
    admit(engine, 0, gang("a0", gpus=8, queue="a"))
    admit(engine, 0, gang("b-low", gpus=4, queue="b"))
    admit(engine, 0, gang("c0", gpus=8, queue="c"))
    d = arrive(engine, 10, gang("b-high", gpus=8, queue="b", priority=5))
    assert d.victims == (("b-low",) if evicted else ())


def test_fair_share_compares_siblings_below_the_common_ancestor():
    # org{x{a: 4, a2: 4}, y{b: 4, b2: 4}}: a2 borrows 4 from a within x; b borrows 4
    # from b2 within y. x and y are both at their share of org, so a takes back from a2
    # (its sibling), never from b (whose leaf share is as high as a2's).
    queues = (
        Queue("org"),
        Queue("x", "org"),
        Queue("y", "org"),
        Queue("a", "x", gpu_quota(4)),
        Queue("a2", "x", gpu_quota(4)),
        Queue("b", "y", gpu_quota(4)),
        Queue("b2", "y", gpu_quota(4)),
    )
    state, engine = setup(FairSharePreemption(), nodes=2, queues=queues)
    admit(engine, 0, *(gang(f"a2-{i}", gpus=4, queue="a2") for i in range(2)))
    admit(engine, 0, *(gang(f"b-{i}", gpus=4, queue="b", priority=-1) for i in range(2)))
    assert dominant_share(state, "b") == dominant_share(state, "a2") == 0.5
    d = arrive(engine, 10, gang("a0", gpus=4, queue="a"))
    assert len(d.victims) == 1 and d.victims[0].startswith("a2-")


# ---- cost-aware -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_runtime", "default", "age", "evicted"),
    [
        (600, 0, 300, False),
        (600, 0, 600, True),
        (0, 600, 300, False),  # the policy default protects gangs without their own
        (0, 600, 900, True),
        (60, 600, 300, True),  # a gang's own min runtime wins over the default
        (0, 0, 0, True),
    ],
)
def test_cost_aware_protects_jobs_younger_than_min_runtime(min_runtime, default, age, evicted):
    _, engine = setup(CostAwarePreemption(default_min_runtime_seconds=default))
    admit(engine, 0, replace(gang("low", gpus=8), min_runtime=min_runtime))
    d = arrive(engine, age, gang("high", gpus=8, priority=5))
    assert d.victims == (("low",) if evicted else ())


def test_cost_aware_evicts_once_protection_ends_without_other_events():
    _, engine = setup(CostAwarePreemption())
    admit(engine, 0, replace(gang("low", gpus=8), min_runtime=300))
    assert arrive(engine, 100, gang("high", gpus=8, priority=5)).outcome is Outcome.PENDING
    result = engine.cycle(now=400)
    assert [d.victims for d in result.admitted] == [("low",)]


@pytest.mark.parametrize(
    ("now", "expected"), [(100, 300.0), (250, 300.0), (350, 500.0), (600, None)]
)
def test_cost_aware_retry_at_is_when_the_next_protection_ends(now, expected):
    policy = CostAwarePreemption(default_min_runtime_seconds=500)
    state, engine = setup(policy)
    admit(engine, 0, replace(gang("a", gpus=4), min_runtime=300), gang("b", gpus=4))
    state.now = now
    assert policy.retry_at(state, gang("high", gpus=8, priority=5)) == expected


def wide_and_narrow(policy):
    """A 6-GPU gang that checkpointed 10 s ago and a 2-GPU one that never checkpoints."""
    state, engine = setup(policy)
    admit(
        engine, 0, replace(gang("wide", gpus=6), checkpoint_interval=100.0), gang("narrow", gpus=2)
    )
    return state, engine


@pytest.mark.parametrize(
    ("policy", "evicted"),
    [
        (CostAwarePreemption(), "wide"),  # 6 x 10 device-seconds lost, not 2 x 210
        (PriorityPreemption(), "narrow"),  # fewest devices first
    ],
)
def test_cost_aware_prefers_least_work_since_checkpoint(policy, evicted):
    _, engine = wide_and_narrow(policy)
    d = arrive(engine, 210, gang("high", gpus=2, priority=5))
    assert d.victims == (evicted,)


@pytest.mark.parametrize(("default_checkpoint", "evicted"), [(None, "b"), (100.0, "a")])
def test_cost_aware_uses_default_checkpoint_for_gangs_without_one(default_checkpoint, evicted):
    _, engine = setup(CostAwarePreemption(default_checkpoint_seconds=default_checkpoint))
    admit(engine, 0, gang("a", gpus=4))
    admit(engine, 50, gang("b", gpus=4))
    # now 130: a lost 4 x 130 (or 4 x 30 since 100), b 4 x 80
    d = arrive(engine, 130, gang("high", gpus=4, priority=5))
    assert d.victims == (evicted,)


def test_cost_aware_then_prefers_fewest_devices():
    _, engine = setup(CostAwarePreemption(default_checkpoint_seconds=100.0))
    admit(engine, 0, gang("wide", gpus=6), gang("narrow", gpus=2))
    d = arrive(engine, 200, gang("high", gpus=2, priority=5))  # both just checkpointed
    assert d.victims == ("narrow",)


def test_cost_aware_never_evicts_equal_priority():
    _, engine = setup(CostAwarePreemption())
    admit(engine, 0, gang("same", gpus=8, priority=5))
    assert arrive(engine, 1000, gang("high", gpus=8, priority=5)).outcome is Outcome.PENDING


def test_queues_without_borrowers_make_no_victims_for_any_sharing_policy():
    for policy in (ReclaimPreemption(), FairSharePreemption()):
        state, engine = setup(policy, nodes=2, queues=tree(("a", 8), ("b", 8)))
        admit(engine, 0, gang("a0", gpus=8, queue="a"), gang("b0", gpus=8, queue="b"))
        assert not policy.could_help(state, gang("b1", gpus=4, queue="b"))


def test_a_refused_preemption_tells_the_driver_when_protection_ends():
    _, engine = setup(CostAwarePreemption())
    admit(engine, 0, replace(gang("low", gpus=8), min_runtime=300))
    engine.state.add_gang(gang("high", gpus=8, priority=5))
    assert engine.cycle(now=100).wake_at == 300
