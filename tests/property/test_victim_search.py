"""The victim search's shortcuts (counting before probing, victims kept released between
probes, policies' memos kept across admissions and releases) change what a search costs,
never what it decides."""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import replace
from unittest import mock

from hypothesis import given, target
from hypothesis import strategies as st

from controller.engine import cycle
from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.ledger import Ledger
from controller.engine.model import Gang, Queue
from controller.engine.placement import Placer, minimum_charge
from controller.engine.policy import PreemptionPolicy
from controller.engine.state import ClusterState
from policies import preemption
from policies.registry import PolicyRef, create_preemption
from tests.builders import cluster, gang, gpu_quota
from tests.property.harness import (
    REAL_PREEMPTION,
    Driver,
    Snapshot,
    clock,
    decision_record,
    make_engine,
    property_settings,
)
from tests.property.strategies import Scenario, scenarios


class ReferenceContext(CycleContext):
    """The straightforward probe: release the victims, place, put everything back; no
    counting first, nothing kept from one probe to the next."""

    def fits(self, gang: Gang, without: Sequence[str] = (), keep: bool = False) -> bool:
        state = self.state
        self.probes += 1
        if state.queue_blocker(gang) is not None:
            return False
        stamp = (state.capacity_epoch, state.admission_generation)
        released = [(state.admitted_gangs[uid], state.release(uid)) for uid in without]
        try:
            return self._fits_now(gang)
        finally:
            for victim, res in reversed(released):
                state.restore(victim, res)
            state.capacity_epoch, state.admission_generation = stamp

    def settle(self) -> None:
        pass

    def too_few_devices(self, gang: Gang, without: Sequence[str]) -> bool:
        return False  # no counting: every set the search asks about is probed


class CountingContext(CycleContext):
    """The engine's probe, counting probes (hypothesis looks for runs with many)."""

    asked = 0

    def fits(self, gang: Gang, without: Sequence[str] = (), keep: bool = False) -> bool:
        CountingContext.asked += 1
        return super().fits(gang, without, keep)


def run(sc: Scenario, context: type[CycleContext]) -> Driver:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    driver.record_errors = True
    with mock.patch.object(cycle, "CycleContext", context):
        for op in sc.ops:
            driver.apply(op)
    return driver


real_preemption = scenarios(max_ops=24).flatmap(
    lambda sc: st.sampled_from(REAL_PREEMPTION).map(lambda p: replace(sc, preempt=p))
)


@property_settings(150)
@given(real_preemption)
def test_the_victim_search_decides_as_the_straightforward_search(sc: Scenario) -> None:
    """Random clusters and operations under each shipped preemption policy: the engine
    (victims counted out before probing and kept released between probes) makes the same
    decisions, victims included, as one whose every probe releases, places and restores,
    and ends in the same state."""
    CountingContext.asked = 0
    fast = run(sc, CountingContext)
    target(float(CountingContext.asked), label="probes")
    reference = run(sc, ReferenceContext)
    assert fast.log == reference.log
    assert Snapshot.of(fast.state) == Snapshot.of(reference.state)


POLICIES = [
    *(PolicyRef(p) for p in REAL_PREEMPTION),
    PolicyRef("priority", {"scope": "cluster"}),
    PolicyRef("reclaim", {"priority": "lower"}),
    PolicyRef("fair-share", {"strategies": ["LessThanInitialShare"]}),
    PolicyRef("cost-aware", {"scope": "cluster"}),
]


def contended(seed: int) -> ClusterState:
    """A full cluster: 2-4 nodes of 4-8 GPUs, 2-4 leaves with random GPU quota and
    weights, low-priority gangs of 1-3 pods x 1-4 GPUs admitted until nothing fits."""
    rng = random.Random(seed)
    leaves = [f"q{i}" for i in range(rng.randint(2, 4))]
    queues = (
        Queue("org"),
        *(
            Queue(q, "org", gpu_quota(rng.choice([0, 2, 4, 8])), weight=rng.choice([1, 2, 0]))
            for q in leaves
        ),
    )
    state = cluster(nodes=rng.randint(2, 4), gpus_per_node=rng.choice([4, 8]), queues=queues)
    engine = Engine(state)
    for i in range(rng.randint(4, 16)):
        g = gang(
            f"run{i:02d}",
            pods=rng.randint(1, 3),
            gpus=rng.randint(1, 4),
            queue=rng.choice(leaves),
            priority=rng.randint(0, 2),
            created=float(i),
        )
        state.add_gang(g)
        engine.cycle(now=float(i)).ledger.commit_all()
    for i in range(rng.randint(1, 6)):
        state.add_gang(
            gang(
                f"new{i}",
                pods=rng.randint(1, 3),
                gpus=rng.randint(1, 8),
                queue=rng.choice(leaves),
                priority=rng.randint(0, 5),
                created=100.0 + i,
            )
        )
    return state


def decide(state: ClusterState, ref: PolicyRef, context: type[CycleContext]) -> list[object]:
    """Three cycles (victims gone between them), the decisions of each."""
    engine = Engine(state, preemption=create_preemption(ref))
    out: list[object] = []
    with mock.patch.object(cycle, "CycleContext", context):
        for step in range(3):
            result = engine.cycle(now=200.0 + 600.0 * step)
            out.append([decision_record(d) for d in result.decisions])
            result.ledger.commit_all()
    return out


@property_settings(150)
@given(st.integers(0, 2**32 - 1), st.sampled_from(POLICIES))
def test_victims_in_a_full_cluster_are_those_of_the_straightforward_search(
    seed: int, ref: PolicyRef
) -> None:
    """Full clusters where newcomers of higher priority, or of queues below their quota,
    must preempt: every shipped preemption policy picks the same victims (and admits the
    same gangs) with the engine's probe as with the straightforward one."""
    CountingContext.asked = 0
    fast = decide(contended(seed), ref, CountingContext)
    target(float(CountingContext.asked), label="probes")
    assert fast == decide(contended(seed), ref, ReferenceContext)


def ask(state: ClusterState, engine: Engine, policy: PreemptionPolicy) -> list[object]:
    """`could_help` and `victims` of `policy` for each pending gang (at most 8), each
    search in a context of its own (nothing admitted in this cycle, so any admitted gang
    may be a victim)."""
    out: list[object] = []
    for uid in sorted(state.pending)[:8]:
        g = state.pending[uid]
        ctx = CycleContext(state, Ledger(state), Placer(state, engine.placement), engine.plan)
        out.append((uid, policy.could_help(state, g), list(policy.victims(ctx, g, ""))))
        ctx.settle()  # as the engine does when it does not take the search's last probe
    return out


@property_settings(100)
@given(
    scenarios(
        max_ops=30, copies=8, exclusive=True, kinds=("reclaim", "reclaim-lower", "fair-share")
    )
)
def test_policies_kept_across_cycles_answer_as_fresh_ones(sc: Scenario) -> None:
    """Policies keep memos across admissions and releases (reclaim's views of a queue
    and their `could_help` answers, kept while the view is equal; fair-share's share of a
    side with one gang evicted, keyed by the pool usage it reads): before every cycle of
    a drawn run (queues, nodes and slices changing too), the long-lived policy's
    `could_help` and `victims` for each pending gang are a fresh policy's, and asking
    leaves the state as it was."""
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    driver.record_errors = True
    kept = driver.engine.preemption
    for op in sc.ops:
        if op[0] == "cycle":
            state = driver.state
            state.now = clock(driver.step + 1)  # the time the driver's cycle will run at
            fresh = make_engine(state, sc.preempt).preemption
            before = Snapshot.of(state)
            assert ask(state, driver.engine, kept) == ask(state, driver.engine, fresh)
            assert Snapshot.of(state) == before
        driver.apply(op)


@property_settings(100)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["reclaim", "reclaim-lower", "fair-share"]),
    st.lists(st.tuples(st.integers(0, 63), st.integers(1, 3), st.integers(1, 4)), max_size=6),
)
def test_policies_kept_across_contention_answer_as_fresh_ones(
    seed: int, kind: str, steps: list[tuple[int, int, int]]
) -> None:
    """Full clusters of queues borrowing from each other (so reclaim has lenders and
    fair-share rivals), gangs finishing and arriving between cycles: before every cycle,
    the long-lived policy answers `could_help` and `victims` as a fresh one."""
    state, engine, leaves = contended_engine(seed, kind)
    for step, (i, pods, gpus) in enumerate([(0, 1, 1), *steps]):
        state.now = 200.0 + 600.0 * step
        fresh = make_engine(state, kind).preemption
        assert ask(state, engine, engine.preemption) == ask(state, engine, fresh)
        cycle_then_churn(engine, leaves, step, (i, pods, gpus))


def contended_engine(seed: int, kind: str) -> tuple[ClusterState, Engine, list[str]]:
    """A full cluster (`contended`), an engine under preemption policy `kind` on it, and
    the cluster's leaf queues by name."""
    state = contended(seed)
    return (
        state,
        make_engine(state, kind),
        sorted(q for q in state.quota.names() if state.quota.is_leaf(q)),
    )


def cycle_then_churn(
    engine: Engine, leaves: list[str], step: int, churn: tuple[int, int, int]
) -> None:
    """A cycle (committed), then the `i`th running gang finishes and a gang of `pods` x
    `gpus` arrives at the `i`th leaf."""
    state = engine.state
    i, pods, gpus = churn
    engine.cycle().ledger.commit_all()
    running = sorted(state.admitted)
    if running:
        state.release(running[i % len(running)])
    state.add_gang(
        gang(f"late{step}", pods, gpus, queue=leaves[i % len(leaves)], created=300.0 + step)
    )


CLOSED = [
    PolicyRef("reclaim"),
    PolicyRef("reclaim", {"priority": "lower"}),
    PolicyRef("fair-share"),
    PolicyRef("fair-share", {"strategies": ["LessThanInitialShare"]}),
    PolicyRef("fair-share", {"strategies": ["LessThanOrEqualToFinalShare"]}),
]


@property_settings(300)
@given(st.integers(0, 2**32 - 1), st.sampled_from(CLOSED), st.randoms(use_true_random=False))
def test_reclaim_and_fair_share_allow_every_part_of_a_victim_list_they_allow(
    seed: int, ref: PolicyRef, rnd: random.Random
) -> None:
    """`minimal_victims(closed=True)` skips asking the policy about the reprieve pass's
    sets (parts of a list it allowed whole): reclaim's and fair-share's admissibility in
    full clusters keeps every drawn part (subsequence) of what it keeps of the
    candidates."""
    longest = 0
    problems: list[object] = []  # (an assertion in a search would be the gang's fault)
    real = preemption.minimal_victims

    def check(ctx: CycleContext, gang: Gang, candidates: Sequence[Gang], *a, **kw):  # type: ignore[no-untyped-def]
        nonlocal longest
        admissible = kw["admissible"]
        whole = admissible([c for c in candidates if ctx.evictable(c.uid)])
        longest = max(longest, len(whole))
        parts = [whole] + [[g for g in whole if rnd.random() < 0.6] for _ in range(8)]
        problems.extend(
            (gang.uid, [g.uid for g in part])
            for part in parts
            if not kw.get("closed") or admissible(part) != part
        )
        return real(ctx, gang, candidates, *a, **kw)

    with mock.patch.object(preemption, "minimal_victims", check):
        decide(contended(seed), ref, CycleContext)
    target(float(longest), label="longest list allowed")
    assert problems == []


@property_settings(100)
@given(st.integers(0, 2**32 - 1), st.sampled_from(CLOSED))
def test_reprieve_without_re_asking_admissibility_picks_the_same_victims(
    seed: int, ref: PolicyRef
) -> None:
    """The same decisions, victims included, with reclaim's and fair-share's searches
    asking admissibility of every reprieve set as without."""
    real = preemption.minimal_victims

    def asking(*a, **kw):  # type: ignore[no-untyped-def]
        return real(*a, **{**kw, "closed": False})

    fast = decide(contended(seed), ref, CycleContext)
    with mock.patch.object(preemption, "minimal_victims", asking):
        assert fast == decide(contended(seed), ref, CycleContext)


class ComparedFairShare(preemption.FairSharePreemption):
    """fair-share that, before each of its searches, checks its kept rivals of a gang of
    every leaf (all, and those a strategy may take) against a fresh policy's."""

    compared = 0

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> list[str]:
        self.compare(ctx.state)
        return super().victims(ctx, gang, reason)

    def compare(self, state: ClusterState) -> None:
        fresh = preemption.FairSharePreemption(strategies=self.strategies)
        quota = state.quota
        for leaf in sorted(q for q in quota.names() if quota.is_leaf(q)):
            g = gang(f"rivals-of-{leaf}", queue=leaf)
            kept = list(self._rivals(state, g).items())
            assert kept == list(fresh._find_rivals(state, g).items()), leaf
            passing = sorted(self._passing_rivals(state, g, self._mine(state, g)).items())
            assert passing == passing_rivals_as_computed_in_full(self, state, g), leaf
            ComparedFairShare.compared += 1


@property_settings(150)
@given(scenarios(max_ops=30, copies=8, exclusive=True, kinds=("fair-share",)))
def test_fair_share_rivals_kept_in_memos_are_those_computed_afresh(
    sc: Scenario,
) -> None:
    """fair-share keeps its rivals (and each side's, and each gang's share alone) in
    memos: on drawn trees of up to three levels, before every victim search of a run (so
    after every admission and eviction of a cycle) and after every operation (gangs
    released, queues changed or deleted, the clock moving), the long-lived policy's
    rivals of a gang of every leaf are, in the same order, those a fresh policy computes
    (a memo kept across admissions must pass this before it goes in)."""
    driver = Driver.of(sc.spec, "none", ordering=sc.ordering)
    policy = ComparedFairShare()
    driver.engine = Engine(driver.state, ordering=driver.engine.ordering, preemption=policy)
    driver.record_errors = True
    ComparedFairShare.compared = 0
    for op in sc.ops:
        driver.apply(op)
        policy.compare(driver.state)
    target(float(ComparedFairShare.compared), label="comparisons")


THREE_LEVELS = ("a.0", "a.1", "b.0", "b.1", "c")
"""Leaves of org -> {a -> {a.0, a.1}, b -> {b.0, b.1}, c}: a victim's side is `a` or `b`
for preemptors outside it, so one leaf's change moves its sibling's rivals too."""


def three_levels(nominal: list[int]) -> ClusterState:
    """Two nodes of 8 GPUs, the THREE_LEVELS tree with these GPU quotas of its leaves."""
    queues = (
        Queue("org"),
        Queue("a", "org"),
        Queue("b", "org"),
        *(
            Queue(q, q[0] if "." in q else "org", gpu_quota(n))
            for q, n in zip(THREE_LEVELS, nominal, strict=True)
        ),
    )
    return cluster(nodes=2, gpus_per_node=8, queues=queues)


@property_settings(200)
@given(
    st.lists(st.sampled_from([0, 2, 4, 8]), min_size=5, max_size=5),
    st.lists(
        st.tuples(st.sampled_from(["add", "release", "clock"]), st.integers(0, 63)),
        min_size=1,
        max_size=40,
    ),
)
def test_fair_share_rivals_in_a_three_level_tree_are_those_computed_afresh(
    nominal: list[int], changes: list[tuple[str, int]]
) -> None:
    """Gangs admitted to and released from the leaves of a three-level tree one at a
    time, the clock moving: after every change, the long-lived fair-share's rivals of a
    gang of every leaf are a fresh policy's, in the same order."""
    state = three_levels(nominal)
    policy = ComparedFairShare()
    engine = Engine(state)
    for step, (kind, i) in enumerate(changes):
        if kind == "add":
            state.add_gang(
                gang(f"g{step:02d}", pods=1 + i % 2, gpus=1 + i % 3, queue=THREE_LEVELS[i % 5])
            )
            engine.cycle(now=state.now).ledger.commit_all()
        elif kind == "release" and state.admitted:
            state.release(sorted(state.admitted)[i % len(state.admitted)])
        else:
            state.now += 60.0
        policy.compare(state)


def passing_rivals_as_computed_in_full(
    policy: preemption.FairSharePreemption, state: ClusterState, g: Gang
) -> list[tuple[str, object]]:
    """Every rival of every side (a fresh policy's), then those a strategy may take (by
    the preemptor's shares a fresh policy computes, and the kept policy's too)."""
    fresh = preemption.FairSharePreemption(strategies=policy.strategies)
    mine = fresh._mine(state, g)
    assert policy._mine(state, g) == mine
    return sorted(
        (u, r) for u, r in fresh._find_rivals(state, g).items() if policy._passes(r, mine)
    )


@property_settings(200)
@given(
    st.lists(st.sampled_from([0, 2, 4, 8]), min_size=5, max_size=5),
    st.lists(st.tuples(st.integers(0, 63), st.integers(1, 2), st.integers(1, 8)), max_size=12),
    st.sampled_from(CLOSED[2:]),
)
def test_fair_share_passes_over_sides_no_rival_of_could_pass(
    nominal: list[int], arrivals: list[tuple[int, int, int]], ref: PolicyRef
) -> None:
    """fair-share skips a side whose share now is no more than the preemptor side's with
    the gang (a rival alone gone leaves its side below its share now, so neither strategy
    could take it): in a filled three-level tree, for drawn gangs of every leaf, the
    rivals it keeps are exactly those of the full computation that a strategy may take."""
    state = three_levels(nominal)
    engine = Engine(state)
    for step, (i, pods, gpus) in enumerate(arrivals):
        state.add_gang(gang(f"run{step:02d}", pods, 1 + gpus % 4, queue=THREE_LEVELS[i % 5]))
        engine.cycle(now=float(step)).ledger.commit_all()
    policy = create_preemption(ref)
    assert isinstance(policy, preemption.FairSharePreemption)
    for leaf in THREE_LEVELS:
        for pods, gpus in [(1, 1), (1, 4), (2, 8), (4, 8)]:
            g = gang(f"new-{leaf}", pods, gpus, queue=leaf)
            kept = sorted(policy._passing_rivals(state, g, policy._mine(state, g)).items())
            assert kept == passing_rivals_as_computed_in_full(policy, state, g)


def searched(
    seed: int, ref: PolicyRef, exact: bool, union_first: bool = True, supersets: bool = True
) -> list[object]:
    """The decisions of `decide`, with each search's victims and `ctx.probes` spent
    (with `exact`, every search keeps the probe count exact), with the search's
    shortcuts on or off."""
    searches: list[object] = []
    real = preemption.minimal_victims

    def recording(ctx: CycleContext, gang: Gang, candidates: Sequence[Gang], *a, **kw):  # type: ignore[no-untyped-def]
        before = ctx.probes
        found = real(ctx, gang, candidates, *a, **({**kw, "exact_probes": True} if exact else kw))
        searches.append((gang.uid, found, ctx.probes - before if exact else None))
        return found

    with (
        mock.patch.object(preemption, "minimal_victims", recording),
        mock.patch.object(preemption, "COUNT_UNION_FIRST", union_first),
        mock.patch.object(preemption, "ANSWER_SUPERSETS", supersets),
    ):
        return [decide(contended(seed), ref, CycleContext), searches]


@property_settings(150)
@given(st.integers(0, 2**32 - 1), st.sampled_from(POLICIES), st.booleans())
def test_searches_counted_out_by_the_union_of_their_sets_decide_as_probing_them(
    seed: int, ref: PolicyRef, exact: bool
) -> None:
    """`minimal_victims` first counts the union of the sets it could probe, and makes no
    probe when even that cannot let the gang fit: every shipped policy decides (victims
    included) as when the whole pool is counted and each set probed, and with
    `exact_probes` each search spends the same number of probes."""
    counted_out = 0
    real = preemption._hopeless

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        nonlocal counted_out
        out = real(*a, **kw)
        counted_out += out
        return out

    with mock.patch.object(preemption, "_hopeless", counting):
        fast = searched(seed, ref, exact)
    target(float(counted_out), label="searches counted out")
    assert fast == searched(seed, ref, exact, union_first=False)


CHURN = st.lists(st.tuples(st.integers(0, 63), st.integers(1, 3), st.integers(1, 8)), max_size=8)
"""Steps of `cycle_then_churn`: (which gang finishes and where one arrives, its pods, GPUs)."""


def reclaim_stamps(
    seed: int, kind: str, steps: list[tuple[int, int, int]]
) -> Iterator[
    tuple[ClusterState, preemption.ReclaimPreemption, PreemptionPolicy, str, object, list[Gang]]
]:
    """In a full cluster with gangs admitted, finishing and arriving (`steps`, each
    after a cycle), at every step and for every leaf queue: the state, the engine's
    reclaim policy, a fresh one on the state now, the queue, the engine's policy's
    `help_stamp` of it now, and its pending gangs by uid."""
    state, engine, leaves = contended_engine(seed, kind)
    policy = engine.preemption
    assert isinstance(policy, preemption.ReclaimPreemption)
    for step, churn in enumerate([(0, 1, 1), *steps]):
        state.now = 200.0 + 600.0 * step
        fresh = make_engine(state, kind).preemption
        for q in leaves:
            stamp = policy.help_stamp(state, q)
            pending = sorted(state.pending.values(), key=lambda g: g.uid)
            yield state, policy, fresh, q, stamp, [g for g in pending if g.queue == q]
        cycle_then_churn(engine, leaves, step, churn)


@property_settings(100)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["reclaim", "reclaim-lower"]), CHURN)
def test_reclaim_answers_under_a_stamp_kept_are_a_fresh_policys(
    seed: int, kind: str, steps: list[tuple[int, int, int]]
) -> None:
    """reclaim's `help_stamp` of a queue stays the same object across admissions and
    releases that change no answer given under it (room no charge asked comes near):
    in full clusters with gangs admitted, finishing and arriving, whenever a queue's
    stamp is one seen before, every `could_help` answer recorded under it (per
    `help_key`) is what a fresh policy answers now."""
    given_under: list[tuple[object, dict[Hashable, bool]]] = []
    kept = 0
    for state, policy, fresh, _, stamp, members in reclaim_stamps(seed, kind, steps):
        recorded = next((a for s, a in given_under if s is stamp), None)
        if recorded is None:
            recorded = {}
            given_under.append((stamp, recorded))
        else:
            kept += 1
        for g in members:
            now = fresh.could_help(state, g)
            assert recorded.setdefault(policy.help_key(g), now) == now
            assert policy.could_help(state, g) == now
    target(float(kept), label="stamps kept")


@property_settings(100)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["reclaim", "reclaim-lower"]), CHURN)
def test_reclaim_names_exactly_the_answers_a_new_stamp_changed(
    seed: int, kind: str, steps: list[tuple[int, int, int]]
) -> None:
    """When reclaim replaces a queue's `help_stamp`, `help_changed(old, new)` names
    exactly the `help_key`s answered under the old stamp whose answers a fresh policy
    gives differently now: the engine keeps every other answer without asking. (Stamps
    the engine's cycles replaced in between make it say it cannot tell: not checked.)"""
    last: dict[str, tuple[object, dict[Hashable, bool]]] = {}
    named = 0
    for state, policy, fresh, q, stamp, members in reclaim_stamps(seed, kind, steps):
        answers = {policy.help_key(g): fresh.could_help(state, g) for g in members}
        before = last.get(q)
        changed = None if before is None else policy.help_changed(before[0], stamp)
        if before is not None and changed is not None:
            differ = {k for k, a in before[1].items() if k in answers and answers[k] != a}
            assert differ <= changed
            both = [k for k in changed if k in answers and k in before[1]]
            assert all(answers[k] != before[1][k] for k in both)
            named += 1
        for g in members:
            policy.could_help(state, g)  # answered under this stamp, as the engine asks
        last[q] = (stamp, answers)
    target(float(named), label="replacements checked")


def test_reclaim_cannot_say_what_changed_across_more_than_one_stamp() -> None:
    """`help_changed` answers for a stamp and the one that directly replaced it; for any
    other pair it says it cannot tell (None), and the engine asks every class again."""
    policy = preemption.ReclaimPreemption()
    state = ClusterState()
    first = preemption._HelpStamp(state)
    second = preemption._HelpStamp(state, first, frozenset({(None, (("gpu", 1),))}))
    first.previous = None
    third = preemption._HelpStamp(state, second, frozenset())
    assert policy.help_changed(first, second) == frozenset({(None, (("gpu", 1),))})
    assert policy.help_changed(first, third) is None
    assert policy.help_changed(second, first) is None


def reclaim_could_help(state: ClusterState, gang: Gang, lower: bool) -> bool:
    """reclaim's `could_help` as its rule states it, from the state: the gang's charge
    fits its leaf's room below nominal in every managed resource and needs some of them,
    and another leaf of the tree with gangs running borrows one of those (and, under
    `priority: lower`, runs a gang of lower priority than the gang's)."""
    quota = state.quota
    q = quota.get(gang.queue)
    if q is None:
        return False
    managed = quota.managed(gang.queue)
    used = quota.usage(gang.queue)
    needs = set()
    for r, v in minimum_charge(gang).items():
        if v and r in managed:
            lim = q.quota.get(r)
            if v > (lim.nominal if lim is not None else 0) - used.get(r, 0):
                return False
            needs.add(r)
    running: dict[str, list[int]] = {}
    for g in state.admitted_gangs.values():
        running.setdefault(g.queue, []).append(g.priority)
    return any(
        quota.root(other) == quota.root(gang.queue)
        and quota.is_leaf(other)
        and any(quota.borrowed(other, r) for r in needs)
        and (not lower or min(priorities) < gang.priority)
        for other, priorities in running.items()
        if other != gang.queue and quota.get(other) is not None
    )


@property_settings(100)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["reclaim", "reclaim-lower"]),
    st.lists(st.tuples(st.integers(0, 63), st.integers(1, 3), st.integers(1, 8)), max_size=6),
)
def test_reclaim_could_help_answers_as_its_rule(
    seed: int, kind: str, steps: list[tuple[int, int, int]]
) -> None:
    """reclaim's `could_help` (answered from its kept views' lending per resource) is, for
    every pending gang, what its rule recomputed from the state says, in full clusters
    with gangs admitted, finishing and arriving."""
    state, engine, leaves = contended_engine(seed, kind)
    policy = engine.preemption
    assert isinstance(policy, preemption.ReclaimPreemption)
    yes = 0
    for step, churn in enumerate([(0, 1, 1), *steps]):
        state.now = 200.0 + 600.0 * step
        for g in sorted(state.pending.values(), key=lambda g: g.uid):
            expected = reclaim_could_help(state, g, kind == "reclaim-lower")
            assert policy.could_help(state, g) == expected, g.uid
            yes += expected
        cycle_then_churn(engine, leaves, step, churn)
    target(float(yes), label="gangs it could help")


def reclaim_keeps(
    state: ClusterState, gang: Gang, needed: list[str], seq: Sequence[Gang]
) -> list[Gang]:
    """reclaim's admissibility as its docstring states it: each candidate in turn is
    kept while its queue still borrows, net of the candidates kept before it, a needed
    resource it uses."""
    quota = state.quota
    taken: dict[str, dict[str, int]] = {}
    out = []
    for g in seq:
        charge = state.admitted[g.uid].charge
        took = taken.setdefault(g.queue, {})
        over = {
            r: quota.pool_usage(g.queue).get(r, 0) - quota.subtree_quota(g.queue, r) for r in needed
        }
        if any(charge.get(r, 0) and over[r] - took.get(r, 0) > 0 for r in needed):
            out.append(g)
            for r, v in charge.items():
                took[r] = took.get(r, 0) + v
    return out


@property_settings(150)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([PolicyRef("reclaim"), PolicyRef("reclaim", {"priority": "lower"})]),
    st.randoms(use_true_random=False),
)
def test_reclaim_keeps_the_victims_its_rule_keeps(
    seed: int, ref: PolicyRef, rnd: random.Random
) -> None:
    """reclaim's admissibility (which skips a queue once it borrows nothing needed) keeps,
    of the candidates and of drawn reorderings and parts of them, the gangs the rule
    recomputed from the state keeps."""
    real = preemption.minimal_victims
    compared = 0
    problems: list[object] = []  # (an assertion in a search would be the gang's fault)

    def check(ctx: CycleContext, gang: Gang, candidates: Sequence[Gang], *a, **kw):  # type: ignore[no-untyped-def]
        nonlocal compared
        needs = preemption.ReclaimPreemption()._needs(ctx.state, gang) or {}
        pool = list(candidates)
        for seq in [pool] + [rnd.sample(pool, rnd.randint(0, len(pool))) for _ in range(6)]:
            kept = kw["admissible"](seq)
            if kept != reclaim_keeps(ctx.state, gang, sorted(needs), seq):
                problems.append((gang.uid, [g.uid for g in seq], [g.uid for g in kept]))
            compared += 1
        return real(ctx, gang, candidates, *a, **kw)

    with mock.patch.object(preemption, "minimal_victims", check):
        decide(crowded(seed), ref, CycleContext)
    target(float(compared), label="lists compared")
    assert problems == []


def crowded(seed: int) -> ClusterState:
    """Many small gangs: 4-6 nodes of 8 GPUs, 2-3 leaves of 0-8 GPUs nominal, gangs of 1-2
    GPUs of every leaf admitted until the cluster is full (so leaves borrow, by many
    gangs each), then newcomers of 1-8 GPUs in leaves that may reclaim."""
    rng = random.Random(seed)
    leaves = [f"q{i}" for i in range(rng.randint(2, 3))]
    queues = (Queue("org"), *(Queue(q, "org", gpu_quota(rng.randint(0, 8))) for q in leaves))
    state = cluster(nodes=rng.randint(4, 6), gpus_per_node=8, queues=queues)
    engine = Engine(state)
    for i in range(48):
        q = leaves[0] if i < 24 and rng.random() < 0.7 else rng.choice(leaves)
        state.add_gang(gang(f"run{i:02d}", gpus=rng.randint(1, 2), queue=q, created=float(i)))
    engine.cycle(now=0.0).ledger.commit_all()
    for i in range(rng.randint(1, 4)):
        state.add_gang(
            gang(f"new{i}", gpus=rng.randint(1, 8), queue=rng.choice(leaves), created=100.0 + i)
        )
    return state


@property_settings(150)
@given(st.integers(0, 2**32 - 1), st.sampled_from(POLICIES), st.booleans())
def test_sets_containing_one_that_fitted_decide_as_probing_them(
    seed: int, ref: PolicyRef, exact: bool
) -> None:
    """The search answers a set containing one that fitted without probing it (counted
    as a probe): every shipped policy decides (victims, placements and reasons
    included) as when each such set is probed, and each search spends as many probes."""
    answered = probed = 0
    real, real_ctx = preemption._Probes.fits, CycleContext.fits

    def counting(self: preemption._Probes, victims: Sequence[Gang]) -> bool | None:
        nonlocal answered
        before = probed
        ok = real(self, victims)
        answered += bool(ok) and probed == before and self.left >= 0 and victims != []
        return ok

    def probing(self: CycleContext, *a, **kw):  # type: ignore[no-untyped-def]
        nonlocal probed
        probed += 1
        return real_ctx(self, *a, **kw)

    with (
        mock.patch.object(preemption._Probes, "fits", counting),
        mock.patch.object(CycleContext, "fits", probing),
    ):
        fast = searched(seed, ref, exact)
    target(float(answered), label="answered without probing")
    assert fast == searched(seed, ref, exact, supersets=False)
