"""Rooms held at a cycle's start (engine `hold_quota`): under preemption, the groups asleep
on quota stay asleep when a release gives their room back, and the walk wakes each at its
turn only if that turn would not pass it as decided (behind its class's cursor if
preemption may help it, else through its room's gate). That must change nothing but the
work: cycle after cycle the engine decides exactly as one that wakes them all at the
start (reasons, victims, searches, and which groups sleep on what), admits what a fresh
engine walking every pending gang admits, and leaves no group asleep whose wait is
over."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from hypothesis import example, given
from hypothesis import strategies as st

from controller.engine.backlog import Backlog, _pods_fitting
from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.model import Gang, Queue
from controller.engine.policy import PreemptionPolicy, help_key
from controller.engine.state import ClusterState
from policies.ordering import Priority
from policies.registry import PolicyRef, create_preemption
from tests.builders import cluster, gang, gpu_quota
from tests.property.harness import decision_record, property_settings
from tests.property.test_cycle import PREEMPTING, admissions

Step = tuple[object, ...]


class AlwaysHopeful:
    """A shipped preemption policy whose `could_help` says yes for every gang: every
    class of every queue is helped, so every room whose sleepers could wake is held."""

    def __init__(self, inner: PreemptionPolicy) -> None:
        self.inner = inner
        self.name = f"hopeful-{inner.name}"

    def help_key(self, gang: Gang) -> Hashable:
        key = help_key(self.inner)
        assert key is not None
        return key(gang)

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return True

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        return self.inner.victims(ctx, gang, reason)


NAMESPACES = ("ns-a", "ns-b", "ns-c")


@st.composite
def busy_queues(draw: st.DrawFn) -> tuple[int, int, tuple[tuple[int, int | None], ...], list[Step]]:
    """Exclusive GPUs shared by two or three leaf queues under one parent whose quotas
    bind (nominal quotas, borrowing limits), and many gangs of a few GPU shapes, in
    several namespaces (groups of one shape in one queue, asleep on quota side by side),
    arriving, leaving while pending, and released while running between cycles: a
    release gives room back to every queue of the parent."""
    nodes = draw(st.integers(1, 3))
    gpus = draw(st.sampled_from([2, 4, 8]))
    queues = tuple(
        draw(
            st.lists(
                st.tuples(st.integers(0, 6), st.one_of(st.none(), st.integers(0, 6))),
                min_size=2,
                max_size=3,
            )
        )
    )
    copies = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 12))  # pods, GPUs
    kind = st.tuples(
        st.integers(0, 2), st.integers(0, len(queues) - 1), st.sampled_from(NAMESPACES)
    )
    step = st.one_of(
        st.tuples(st.just("add"), copies, kind),  # priority, queue, namespace
        st.tuples(st.just("cycle")),
        st.tuples(st.just("release"), st.integers(0, 63)),
        st.tuples(st.just("release"), st.integers(0, 63)),
        st.tuples(st.just("leave"), st.integers(0, 63)),
    )
    return nodes, gpus, queues, [*draw(st.lists(step, min_size=10, max_size=40)), ("cycle",)]


def busy_cluster(nodes: int, gpus: int, queues: tuple[tuple[int, int | None], ...]) -> ClusterState:
    leaves = (
        Queue(f"q{i}", "root", gpu_quota(nominal, borrowing=borrowing))
        for i, (nominal, borrowing) in enumerate(queues)
    )
    return cluster(nodes, gpus, (Queue("root"), *leaves))


def apply(state: ClusterState, step: Step, added: int) -> int:
    """Apply a non-cycle step; returns the gangs added so far."""
    state.now += 60.0
    if step[0] == "add":
        (pods, per_pod, copies), (priority, queue, namespace) = step[1:]
        assert isinstance(copies, int) and isinstance(priority, int)
        assert isinstance(namespace, str)
        for _ in range(copies):
            uid = f"g{added:03d}"
            state.add_gang(
                gang(
                    uid,
                    pods,
                    per_pod,
                    queue=f"q{queue}",
                    priority=priority,
                    created=added,
                    namespace=namespace,
                )
            )
            added += 1
    elif step[0] in ("release", "leave"):
        among = sorted(state.admitted if step[0] == "release" else state.pending)
        if among:
            assert isinstance(step[1], int)
            uid = among[step[1] % len(among)]
            if step[0] == "release":
                state.release(uid)
            else:
                state.remove_gang(uid)
    return added


def sleepers(backlog: Backlog | None) -> tuple[object, ...]:
    if backlog is None:
        return ()
    return (dict(backlog.short_of_quota), dict(backlog.asleep), frozenset(backlog.awake))


def waits_over(state: ClusterState, backlog: Backlog | None) -> list[str]:
    """Groups asleep though what they wait for is there (quota room, free devices)."""
    if backlog is None:
        return []
    out = []
    for where, ((queue, resource), amount) in backlog.short_of_quota.items():
        room = state.quota.headroom(queue, resource)[0]
        if room is None or room >= amount:
            out.append(f"{where} asleep for {amount} {resource}, room {room}")
    for shape, (need, pods) in backlog.asleep.items():
        fitting = _pods_fitting(state.inventory, need)
        if fitting is None or fitting >= pods:
            out.append(f"shape {shape} asleep for {pods} pods, {fitting} fit")
    return out


@property_settings(150)
@given(busy_queues(), st.sampled_from(PREEMPTING), st.booleans())
@example(  # after a search in q0, its second held group comes in through a gate
    (
        1,
        8,
        ((2, 2), (2, 0)),
        [
            ("add", (1, 1, 2), (0, 0, "ns-a")),
            ("add", (1, 1, 2), (0, 1, "ns-a")),
            ("add", (1, 1, 1), (0, 0, "ns-c")),
            ("add", (1, 1, 1), (0, 0, "ns-d")),
            ("cycle",),
            ("add", (1, 3, 1), (2, 0, "ns-b")),
            ("cycle",),
            ("release", 0),
            ("release", 0),
            ("cycle",),
        ],
    ),
    PolicyRef("reclaim"),
    True,
)
def test_rooms_held_at_a_cycles_start_decide_as_waking_every_sleeper(
    backlog: tuple[int, int, tuple[tuple[int, int | None], ...], list[Step]],
    policy: PolicyRef,
    hopeful: bool,
) -> None:
    """Two engines on identical states, one holding rooms and one waking every sleeper
    whose room grew at each cycle's start: the same decisions (reasons and victims), the
    same number of searches, the same groups asleep on the same amounts after every
    cycle; the holding engine admits what a fresh engine trying every pending gang
    admits, and leaves no group asleep whose wait is over. Under the shipped policies,
    and under each made `AlwaysHopeful` (every room held)."""
    nodes, gpus, queues, steps = backlog

    def preemption() -> PreemptionPolicy:
        inner = create_preemption(policy)
        return AlwaysHopeful(inner) if hopeful else inner

    states = [busy_cluster(nodes, gpus, queues) for _ in range(3)]  # the last: fresh engines
    engines = [Engine(s, Priority(), preemption(), lazy_from=0, lazy_below=0) for s in states[:2]]
    holding, waking = engines
    waking.hold_quota = False
    added = 0
    for step in steps:
        if step[0] != "cycle":
            counts = [apply(s, step, added) for s in states]  # the step on both
            added = counts[0]
            continue
        now = states[0].now + 60.0
        states[2].now = now
        fresh = Engine(states[2], Priority(), preemption(), walk_all=True).cycle()
        fresh.ledger.commit_all()  # its own state follows along while the admissions agree
        results = [e.cycle(now=now) for e in engines]
        assert admissions(results[0]) == admissions(fresh)
        held, woke = ([decision_record(d) for d in r.decisions] for r in results)
        assert held == woke
        assert results[0].preemption_searches == results[1].preemption_searches
        for r in results:
            r.ledger.commit_all()
        assert holding._backlog is not None  # the lazy walk did not fail (and fall back)
        assert sleepers(holding._backlog) == sleepers(waking._backlog)
        assert waits_over(states[0], holding._backlog) == []
