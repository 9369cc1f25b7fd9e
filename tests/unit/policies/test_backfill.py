"""best-effort-fifo: skip what does not fit; a starving gang's reservation and EASY backfill."""

from __future__ import annotations

import pytest

from controller.engine.cycle import Engine
from controller.engine.model import Queue
from policies.ordering import BestEffortFifo
from tests.builders import cluster, gang
from tests.unit.policies.test_ordering import Tried, cycle, with_estimate

TWO_QUEUES = (Queue("team-a"), Queue("team-b"))


def running(engine: Engine, *gangs: tuple[str, int, float | None], queue: str = "team-a"):
    """Admit (uid, gpus, runtime estimate) gangs at time 0."""
    for i, (uid, gpus, est) in enumerate(gangs):
        engine.state.add_gang(
            with_estimate(gang(uid, gpus=gpus, created=-10 + i, queue=queue), est)
        )
    _, admitted = cycle(engine, now=0.0)
    assert admitted == [g[0] for g in gangs]


def setup(policy: BestEffortFifo, queues=TWO_QUEUES) -> tuple[Engine, Tried]:
    """One node with 8 GPUs; half of them held until t=10000 by a gang estimated to run
    that long; a pending 8-GPU gang `big` waiting since t=0."""
    tried = Tried(policy)
    engine = Engine(cluster(nodes=1, queues=queues), ordering=tried)
    running(engine, ("r1", 4, 10_000.0))
    engine.state.add_gang(gang("big", gpus=8, created=1))
    return engine, tried


@pytest.mark.parametrize(
    ("estimate", "offered"),
    [
        (5_000.0, True),  # ends at 9000, before big's start at 10000
        (6_000.0, True),  # ends exactly at the start
        (7_000.0, False),  # would delay big
        (None, False),  # unknown: might delay big
    ],
)
def test_a_later_gang_backfills_only_if_it_ends_before_the_starving_gangs_start(estimate, offered):
    engine, _ = setup(BestEffortFifo(starvation_seconds=3600))
    engine.state.add_gang(with_estimate(gang("later", gpus=2, created=2), estimate))
    tried, admitted = cycle(engine, now=4000.0)
    assert tried == (["big", "later"] if offered else ["big"])
    assert admitted == (["later"] if offered else [])
    assert engine.ordering.inner.reservation == ("big", 10_000.0)


def test_without_a_starving_gang_what_fits_is_admitted_in_created_order():
    engine, _ = setup(BestEffortFifo(starvation_seconds=3600))
    for uid, est, created in [("long", 7000.0, 3), ("unknown", None, 4), ("short", 10.0, 2)]:
        engine.state.add_gang(with_estimate(gang(uid, gpus=2, created=created), est))
    tried, admitted = cycle(engine, now=3600.0)  # waited exactly the limit: not starving
    assert tried == ["big", "short", "long", "unknown"]
    assert admitted == ["short", "long"]
    assert engine.ordering.inner.reservation is None


def test_the_reservation_holds_the_whole_cluster_not_just_the_starving_gangs_queue():
    engine, _ = setup(BestEffortFifo(starvation_seconds=3600))
    engine.state.add_gang(gang("b-unknown", gpus=1, created=2, queue="team-b"))
    engine.state.add_gang(with_estimate(gang("b-short", gpus=1, created=3, queue="team-b"), 60))
    tried, admitted = cycle(engine, now=4000.0)
    assert tried == ["big", "b-short"]
    assert admitted == ["b-short"]


def test_with_no_start_time_the_starving_gang_blocks_its_queue_but_not_another():
    tried_policy = Tried(BestEffortFifo(starvation_seconds=3600))
    engine = Engine(cluster(nodes=1, queues=TWO_QUEUES), ordering=tried_policy)
    running(engine, ("r1", 4, None))  # never ends as far as anyone knows
    engine.state.add_gang(gang("big", gpus=8, created=1))
    engine.state.add_gang(with_estimate(gang("a-short", gpus=1, created=2), 1.0))
    engine.state.add_gang(gang("b-small", gpus=1, created=3, queue="team-b"))
    tried, admitted = cycle(engine, now=4000.0)
    assert tried == ["big", "b-small"]
    assert admitted == ["b-small"]
    assert tried_policy.inner.reservation == ("big", None)


def test_only_the_oldest_starving_gang_gets_the_reservation():
    engine, _ = setup(BestEffortFifo(starvation_seconds=3600))
    engine.state.add_gang(gang("big-2", gpus=8, created=2))
    engine.state.add_gang(with_estimate(gang("short", gpus=2, created=3), 100.0))
    tried, admitted = cycle(engine, now=4000.0)
    assert tried == ["big", "short"]
    assert admitted == ["short"]
    assert engine.ordering.inner.reservation == ("big", 10_000.0)


def staggered(policy: BestEffortFifo) -> Engine:
    """Four running 2-GPU gangs ending at 100, 200, 300, 400; `big` needs 6 of 8 GPUs."""
    engine = Engine(cluster(nodes=1, queues=TWO_QUEUES), ordering=Tried(policy))
    running(engine, *[(f"r{i}", 2, 100.0 * i) for i in (4, 2, 3, 1)])
    engine.state.add_gang(gang("big", gpus=6, created=1))
    return engine


@pytest.mark.parametrize(
    ("max_probes", "start"),
    [
        (16, 300.0),  # three must end: the third-earliest end
        (1, 300.0),  # device counts rule out two ends, the one probe confirms the third
    ],
)
def test_the_earliest_start_is_the_end_of_the_shortest_prefix_of_running_gangs_that_frees_enough(
    max_probes, start
):
    engine = staggered(BestEffortFifo(starvation_seconds=10, max_probes=max_probes))
    cycle(engine, now=50.0)
    assert engine.ordering.inner.reservation == ("big", start)
    assert sorted(engine.state.admitted) == ["r1", "r2", "r3", "r4"]
    assert engine.state.violations() == []


def test_an_overdue_running_gang_makes_the_start_now():
    engine = staggered(BestEffortFifo(starvation_seconds=10))
    engine.state.add_gang(with_estimate(gang("quick", gpus=1, created=2), 0.0))
    engine.state.add_gang(with_estimate(gang("slow", gpus=1, created=3), 1.0))
    tried, admitted = cycle(engine, now=350.0)  # r3 should have ended at 300
    assert engine.ordering.inner.reservation == ("big", 350.0)
    assert (tried, admitted) == (["big", "quick"], [])  # no GPU is free to backfill


def test_the_start_is_kept_while_the_reserved_gang_waits_and_no_node_changes():
    engine = staggered(BestEffortFifo(starvation_seconds=10))
    cycle(engine, now=50.0)
    engine.state.release("r3")  # ends early: the true T moves up to 200
    engine.state.remove_gang("r3")
    cycle(engine, now=60.0)
    assert engine.ordering.inner.reservation == ("big", 300.0)
