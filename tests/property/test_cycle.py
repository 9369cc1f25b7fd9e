"""The cycle's memos (failed shapes and gangs skipped until something changes) and its
lazy walk over groups of alike gangs only save time: a long-lived engine admits exactly
what a fresh engine walking every pending gang admits on the same state."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from hypothesis import given
from hypothesis import strategies as st

from controller.engine.context import CycleContext
from controller.engine.cycle import CycleResult, Engine, Outcome
from controller.engine.model import Gang, Queue
from controller.engine.policy import PreemptionPolicy, help_key
from controller.engine.state import ClusterState
from policies.ordering import Priority
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
from tests.property.strategies import Op, Scenario, scenarios


def admissions(result: CycleResult) -> list[tuple[str, object, tuple[str, ...]]]:
    return [
        (d.gang_uid, d.reservation, d.victims)
        for d in result.decisions
        if d.outcome is Outcome.ADMITTED
    ]


def check_memo(sc: Scenario) -> None:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    driver.engine.lazy_from = driver.engine.lazy_below = 0  # the group index from the start
    problems: list[str] = []
    fresh_admissions: list[tuple[str, object, tuple[str, ...]]] = []

    def before_cycle() -> None:
        state = driver.state
        before = Snapshot.of(state)
        state.now = clock(driver.step + 1)  # the time the driver's cycle will run at
        reference = make_engine(state, sc.preempt, sc.ordering)
        reference.walk_all = True
        fresh = reference.cycle()
        fresh_admissions[:] = admissions(fresh)
        fresh.ledger.rollback_all()
        problems.extend(f"fresh engine's rollback: {p}" for p in before.diff(Snapshot.of(state)))

    def after_cycle(d: Driver, op: Op, before: Snapshot, result: CycleResult) -> None:
        mine = admissions(result)
        if mine != fresh_admissions:
            problems.append(f"long-lived engine admitted {mine}, a fresh one {fresh_admissions}")

    driver.after_cycle = after_cycle
    for step, op in enumerate(sc.ops):
        if op[0] == "cycle":
            before_cycle()
        driver.apply(op)
        assert problems == [], f"after step {step} {op[:2]}"


@property_settings(150)
@given(scenarios())
def test_memoised_cycle_admits_what_a_fresh_engine_admits(sc: Scenario) -> None:
    """Before every cycle, a fresh Engine (no memos, no cached plans) runs a cycle on the
    same state and is rolled back; the long-lived engine's cycle must then admit the same
    gangs with the same reservations, in the same order."""
    check_memo(sc)


@property_settings(100)
@given(
    scenarios(
        max_ops=30, preemption=False, copies=30, orderings=("priority", "sjf"), exclusive=True
    )
)
def test_lazy_walk_over_repeated_shapes_admits_what_the_whole_walk_admits(sc: Scenario) -> None:
    """Backlogs of many gangs of few shapes, under the orderings the engine walks lazily
    (group heads merged by key, a group left at its first shared failure, shapes asleep
    until enough devices are free): the same admissions as a fresh engine that tries
    every pending gang, cycle after cycle."""
    check_memo(sc)


@property_settings(100)
@given(
    scenarios(
        max_ops=30,
        copies=30,
        orderings=("priority", "sjf"),
        exclusive=True,
        kinds=(*REAL_PREEMPTION, "reclaim-lower"),
    )
)
def test_lazy_walk_under_preemption_admits_and_evicts_what_the_whole_walk_does(
    sc: Scenario,
) -> None:
    """Backlogs of many gangs of few shapes under each shipped preemption policy: groups
    are left out of the walk only while no victims would be searched for them (their
    queue was searched, or `could_help` says no for their class), and resume after
    admissions, releases and evictions; the same admissions, with the same victims, as a
    fresh engine that tries every pending gang, cycle after cycle."""
    check_memo(sc)


Step = tuple[object, ...]


def release_running(state: ClusterState, i: object) -> None:
    running = sorted(state.admitted)
    if running:
        assert isinstance(i, int)
        state.release(running[i % len(running)])


def cycle_as_reference(engine: Engine, reference: Engine) -> None:
    """`reference` (a fresh engine on the same state) runs a cycle and rolls it back;
    then `engine`'s cycle must admit the same gangs with the same victims."""
    fresh = reference.cycle()
    want = admissions(fresh)
    fresh.ledger.rollback_all()
    result = engine.cycle()
    result.ledger.commit_all()
    assert admissions(result) == want


@st.composite
def device_bound_backlogs(draw: st.DrawFn) -> tuple[int, int, list[Step]]:
    """Nodes of exclusive GPUs and many gangs of a few GPU shapes, with releases: what
    fits is decided by free device counts, so shapes fall asleep and wake up."""
    nodes = draw(st.integers(1, 4))
    gpus = draw(st.sampled_from([2, 4, 8]))
    shapes = st.tuples(st.integers(1, 4), st.integers(1, 8))
    step = st.one_of(
        st.tuples(st.just("add"), shapes, st.integers(1, 20), st.integers(0, 2)),
        st.tuples(st.just("cycle")),
        st.tuples(st.just("release"), st.integers(0, 63)),
    )
    return nodes, gpus, [*draw(st.lists(step, min_size=3, max_size=25)), ("cycle",)]


@property_settings(100)
@given(device_bound_backlogs())
def test_shapes_asleep_wake_up_when_enough_devices_are_free(
    backlog: tuple[int, int, list[Step]],
) -> None:
    """A long-lived engine (whose shapes sleep until free devices could host them)
    admits what a fresh engine trying every pending gang admits, before every cycle."""
    nodes, gpus, steps = backlog
    state = cluster(nodes, gpus)
    engine = Engine(state, lazy_from=0, lazy_below=0)
    added = 0
    for step in steps:
        if step[0] == "add":
            (pods, per_pod), copies, priority = step[1], step[2], step[3]
            assert isinstance(copies, int) and isinstance(priority, int)
            for _ in range(copies):
                uid = f"g{added:03d}"
                state.add_gang(gang(uid, pods, per_pod, priority=priority, created=added))
                added += 1
        elif step[0] == "release":
            release_running(state, step[1])
        else:
            cycle_as_reference(engine, Engine(state, walk_all=True))


PREEMPTING = (
    PolicyRef("priority"),
    PolicyRef("priority", {"scope": "cluster"}),
    PolicyRef("reclaim"),
    PolicyRef("reclaim", {"priority": "lower"}),
    PolicyRef("fair-share"),
    PolicyRef("cost-aware", {"scope": "cluster"}),
)


@st.composite
def preempting_backlogs(draw: st.DrawFn) -> tuple[int, int, tuple[int, ...], list[Step]]:
    """Exclusive GPUs shared by two or three leaf queues (nominal quotas that may be
    borrowed beyond), and many gangs of a few shapes and priorities, with releases:
    queues borrow, then reclaim and evict, cycle after cycle."""
    nodes = draw(st.integers(1, 3))
    gpus = draw(st.sampled_from([2, 4, 8]))
    nominal = tuple(draw(st.lists(st.integers(0, 8), min_size=2, max_size=3)))
    shapes = st.tuples(st.integers(1, 3), st.integers(1, 4))
    step = st.one_of(
        st.tuples(
            st.just("add"),
            shapes,
            st.integers(1, 12),
            st.integers(0, 2),
            st.integers(0, len(nominal) - 1),
            st.booleans(),
        ),
        st.tuples(st.just("cycle")),
        st.tuples(st.just("release"), st.integers(0, 63)),
    )
    return nodes, gpus, nominal, [*draw(st.lists(step, min_size=6, max_size=30)), ("cycle",)]


def borrowing_cluster(backlog: tuple[int, int, tuple[int, ...], list[Step]]) -> ClusterState:
    nodes, gpus, nominal, _ = backlog
    queues = (
        Queue("root"),
        *(Queue(f"q{i}", "root", gpu_quota(n, borrowing=None)) for i, n in enumerate(nominal)),
    )
    return cluster(nodes, gpus, queues)


def apply_step(state: ClusterState, step: Step, added: int) -> int:
    """Apply a non-cycle step of `preempting_backlogs`; returns the gangs added so far."""
    state.now += 60.0
    if step[0] == "add":
        (pods, per_pod), copies, priority, queue, late = step[1:]
        assert isinstance(copies, int) and isinstance(priority, int)
        for _ in range(copies):
            uid = f"g{added:03d}"
            created = -added if late else added
            state.add_gang(
                gang(uid, pods, per_pod, queue=f"q{queue}", priority=priority, created=created)
            )
            added += 1
    elif step[0] == "release":
        release_running(state, step[1])
    return added


@property_settings(100)
@given(preempting_backlogs(), st.sampled_from(PREEMPTING))
def test_lazy_walk_searches_and_evicts_as_the_whole_walk_with_large_groups(
    backlog: tuple[int, int, tuple[int, ...], list[Step]], policy: PolicyRef
) -> None:
    """Many gangs of one queue, shape and priority (some created in reverse of their
    order, so admissions interleave with groups left out): a long-lived engine, whose
    groups leave the walk once no victims would be searched for them and resume after
    admissions, releases and evictions, admits the same gangs with the same victims as a
    fresh engine trying every pending gang, before every cycle."""
    state = borrowing_cluster(backlog)
    engine = Engine(state, Priority(), create_preemption(policy), lazy_from=0, lazy_below=0)
    added = 0
    for step in backlog[3]:
        if step[0] == "cycle":
            state.now += 60.0
            reference = Engine(state, Priority(), create_preemption(policy), walk_all=True)
            cycle_as_reference(engine, reference)
        else:
            added = apply_step(state, step, added)


class WithoutStamp:
    """A preemption policy with its `help_stamp` hidden: the engine asks `could_help`
    again after every admission or release."""

    def __init__(self, inner: PreemptionPolicy) -> None:
        self.inner = inner
        self.name = inner.name

    def help_key(self, gang: Gang) -> Hashable:
        key = help_key(self.inner)
        assert key is not None
        return key(gang)

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return self.inner.could_help(state, gang)

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        return self.inner.victims(ctx, gang, reason)


@property_settings(100)
@given(
    preempting_backlogs(),
    st.sampled_from([PolicyRef("reclaim"), PolicyRef("reclaim", {"priority": "lower"})]),
)
def test_could_help_kept_while_its_stamp_holds_decides_as_asking_after_each_change(
    backlog: tuple[int, int, tuple[int, ...], list[Step]], policy: PolicyRef
) -> None:
    """The engine keeps `could_help` answers per class (and per queue, while its classes
    are the same) while the policy's `help_stamp` of the queue is the same, across
    cycles too (gangs arriving and leaving between them), and when the stamp is replaced
    asks again only the classes `help_changed` names: cycle after cycle it decides
    exactly as an engine on an identical state whose policy hides its stamp (asked after
    each change), reasons, victims and the number of searches included."""
    states = [borrowing_cluster(backlog) for _ in range(2)]
    policies = (create_preemption(policy), WithoutStamp(create_preemption(policy)))
    engines = [
        Engine(state, Priority(), p, lazy_from=0, lazy_below=0)
        for state, p in zip(states, policies, strict=True)
    ]
    decide_alike(engines, backlog[3])


def decide_alike(engines: list[Engine], steps: list[Step]) -> None:
    """Apply the steps to the engines' identical states; every cycle must make the same
    decisions (reasons and victims included) with the same number of searches."""
    added = 0
    for step in steps:
        if step[0] != "cycle":
            counts = [apply_step(engine.state, step, added) for engine in engines]
            added = counts[0]
            continue
        results = [engine.cycle(now=engine.state.now + 60.0) for engine in engines]
        first, *others = ([decision_record(d) for d in r.decisions] for r in results)
        assert all(other == first for other in others)
        assert len({r.preemption_searches for r in results}) == 1
        for r in results:
            r.ledger.commit_all()


@property_settings(100)
@given(preempting_backlogs(), st.sampled_from(PREEMPTING))
def test_dormant_groups_behind_cursors_decide_as_copying_them_into_the_walk(
    backlog: tuple[int, int, tuple[int, ...], list[Step]], policy: PolicyRef
) -> None:
    """The walk reads the dormant groups of the classes preemption helps from the
    backlog's sorted positions (kept across cycles, groups woken at a cycle's start left
    out) instead of copying them in at each cycle's start: cycle after cycle it decides
    exactly as an engine on an identical state that copies them, reasons, victims and
    the number of searches included."""
    states = [borrowing_cluster(backlog) for _ in range(2)]
    engines = [
        Engine(state, Priority(), create_preemption(policy), lazy_from=0, lazy_below=0)
        for state in states
    ]
    engines[1].copy_dormant = True
    decide_alike(engines, backlog[3])
