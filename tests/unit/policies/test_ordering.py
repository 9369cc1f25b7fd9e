"""Ordering policies: selection by name, priority, strict FIFO and shortest job first.

The helpers here (a recording wrapper, a one-cycle runner) are shared by the DRF, LAS and
backfill tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.model import Gang, Queue
from policies.ordering import Priority, ShortestJobFirst, StrictFifo
from policies.registry import UnknownPolicy, create, create_ordering
from tests.builders import cluster, gang

NAMES = ["priority", "strict-fifo", "best-effort-fifo", "drf", "las", "sjf"]


@dataclass
class Tried:
    """Wraps an ordering and records the gangs the engine was offered (pending ones)."""

    inner: Any
    name: str = "tried"
    uids: list[str] = field(default_factory=list)

    def order(self, ctx: CycleContext, queue: str | None = None):
        for g in self.inner.order(ctx, queue):
            if g.uid in ctx.state.pending:
                self.uids.append(g.uid)
            yield g

    def observe(self, gang: Gang, admitted: bool) -> None:
        self.inner.observe(gang, admitted)


def cycle(engine: Engine, now: float = 0.0) -> tuple[list[str], list[str]]:
    """One committed cycle: (uids offered in order, uids admitted in order)."""
    recorder = engine.ordering
    assert isinstance(recorder, Tried)
    recorder.uids.clear()
    result = engine.cycle(now=now)
    result.ledger.commit_all()
    return list(recorder.uids), [d.gang_uid for d in result.admitted]


def with_estimate(g: Gang, seconds: float | None) -> Gang:
    return dataclasses.replace(g, runtime_estimate=seconds)


# ---- selection by name --------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_ordering_is_selectable_by_name(name):
    assert create_ordering(name).name == name


def test_an_unknown_parameter_is_refused_naming_the_real_ones():
    with pytest.raises(UnknownPolicy) as err:
        create("ordering", {"name": "las", "params": {"bogus": 1}})
    assert "unknown parameter" in str(err.value) and "bogus" in str(err.value)
    assert "thresholds" in str(err.value) and "promote_after_seconds" in str(err.value)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("las", {"thresholds": [100, 10]}, "ascending"),
        ("las", {"thresholds": [-1]}, ">= 0"),
        ("las", {"promote_after_seconds": -5}, ">= 0"),
        ("best-effort-fifo", {"max_probes": 0}, ">= 1"),
        ("best-effort-fifo", {"starvation_seconds": -1}, ">= 0"),
        ("best-effort-fifo", {"starvation_seconds": "soon"}, "valid number"),
    ],
)
def test_a_bad_parameter_value_is_refused(name, params, message):
    with pytest.raises(UnknownPolicy, match=message):
        create("ordering", {"name": name, "params": params})


def test_parameters_are_taken_from_the_reference():
    las = create_ordering({"name": "las", "params": {"thresholds": [10, 20]}})
    assert las.thresholds == (10.0, 20.0)


# ---- priority -----------------------------------------------------------------------
def test_priority_offers_higher_priority_then_older_then_uid_and_skips_what_does_not_fit():
    state = cluster(nodes=1)
    for g in [
        gang("old", gpus=4, created=0),
        gang("b-same", gpus=4, created=1),
        gang("a-same", gpus=4, created=1),
        gang("urgent", gpus=8, created=5, priority=10),
    ]:
        state.add_gang(g)
    tried, admitted = cycle(Engine(state, ordering=Tried(Priority())))
    assert tried == ["urgent", "old", "a-same", "b-same"]
    assert admitted == ["urgent"]


# ---- strict FIFO --------------------------------------------------------------------
TWO_QUEUES = (Queue("team-a"), Queue("team-b"))


def test_strict_fifo_head_that_does_not_fit_blocks_its_queue_but_not_another():
    state = cluster(nodes=1, queues=TWO_QUEUES)
    state.add_gang(gang("a-head", gpus=16, created=0))  # never fits on 8 GPUs
    state.add_gang(gang("a-small", gpus=1, created=1))
    state.add_gang(gang("b-small", gpus=1, created=2, queue="team-b"))
    tried, admitted = cycle(Engine(state, ordering=Tried(StrictFifo())))
    assert tried == ["a-head", "b-small"]
    assert admitted == ["b-small"]


def test_strict_fifo_ignores_priority_within_a_queue():
    state = cluster(nodes=1)
    state.add_gang(gang("old-low", gpus=8, created=0))
    state.add_gang(gang("new-high", gpus=8, created=1, priority=100))
    tried, admitted = cycle(Engine(state, ordering=Tried(StrictFifo())))
    assert tried == ["old-low", "new-high"]
    assert admitted == ["old-low"]


def test_strict_fifo_interleaves_queues_by_created():
    state = cluster(nodes=2, queues=TWO_QUEUES)
    for uid, queue, created in [("a1", "team-a", 0), ("b1", "team-b", 1), ("a2", "team-a", 2)]:
        state.add_gang(gang(uid, gpus=1, queue=queue, created=created))
    tried, admitted = cycle(Engine(state, ordering=Tried(StrictFifo())))
    assert tried == admitted == ["a1", "b1", "a2"]


def test_strict_fifo_for_one_queue_offers_only_that_queue_and_stops_at_its_blocked_head():
    state = cluster(nodes=1, queues=TWO_QUEUES)
    state.add_gang(gang("a-head", gpus=16, created=0))
    state.add_gang(gang("a-next", gpus=1, created=1))
    state.add_gang(gang("b1", gpus=1, created=0, queue="team-b"))
    policy = StrictFifo()
    ctx = CycleContext(state, None, None, None)  # type: ignore[arg-type]
    offered = []
    for g in policy.order(ctx, "team-a"):
        offered.append(g.uid)
        policy.observe(g, False)
    assert offered == ["a-head"]


def test_strict_fifo_follows_gangs_that_come_and_go_between_cycles():
    state = cluster(nodes=1)
    policy = Tried(StrictFifo())
    engine = Engine(state, ordering=policy)
    state.add_gang(gang("first", gpus=16, created=0))
    state.add_gang(gang("second", gpus=1, created=1))
    assert cycle(engine) == (["first"], [])
    state.remove_gang("first")
    state.add_gang(gang("zeroth", gpus=1, created=-1))
    assert cycle(engine) == (["zeroth", "second"], ["zeroth", "second"])


# ---- shortest job first -------------------------------------------------------------
@pytest.mark.parametrize(
    ("gangs", "expected"),
    [
        ([("long", 100, 0, 0), ("short", 10, 0, 1)], ["short", "long"]),
        ([("unknown", None, 0, 0), ("known", 1000, 0, 1)], ["known", "unknown"]),
        ([("low", 10, 0, 0), ("high", 10, 5, 1)], ["high", "low"]),
        ([("newer", 10, 0, 2), ("older", 10, 0, 1)], ["older", "newer"]),
        ([("u2", None, 0, 2), ("u1", None, 0, 1), ("zero", 0, 0, 3)], ["zero", "u1", "u2"]),
    ],
)
def test_sjf_offers_the_shortest_estimate_first_and_unknown_last(gangs, expected):
    state = cluster(nodes=1)
    for uid, est, priority, created in gangs:
        state.add_gang(with_estimate(gang(uid, gpus=16, priority=priority, created=created), est))
    tried, _ = cycle(Engine(state, ordering=Tried(ShortestJobFirst())))
    assert tried == expected


def test_sjf_rekeys_a_gang_replaced_with_a_new_estimate():
    state = cluster(nodes=1)
    engine = Engine(state, ordering=Tried(ShortestJobFirst()))
    state.add_gang(with_estimate(gang("a", gpus=16, created=0), 10))
    state.add_gang(with_estimate(gang("b", gpus=16, created=1), 20))
    assert cycle(engine)[0] == ["a", "b"]
    state.add_gang(with_estimate(gang("a", gpus=16, created=0), 30))
    cycle(engine)  # the replacement is seen while walked...
    assert cycle(engine)[0] == ["b", "a"]  # ...and re-keyed from the next cycle on
