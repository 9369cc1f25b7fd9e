"""Ledger: tentative reservations are visible, then committed or rolled back exactly."""

from __future__ import annotations

import pytest

from controller.engine.context import CycleContext
from controller.engine.cycle import Engine, Outcome
from controller.engine.errors import InvalidInput
from controller.engine.model import Gang, Queue
from controller.engine.placement import Placer
from controller.engine.policy import BinPack
from controller.engine.state import ClusterState
from tests.builders import cluster, gang, gpu_quota


def snapshot(state: ClusterState):
    return (
        {n: dict(u.used) for n, u in state.nodes.items()},
        {k: set(v) for k, v in state.inventory.owners.items()},
        {q: dict(state.quota.usage(q)) for q in state.quota.names()},
        sorted(state.pending),
    )


def test_later_decisions_in_a_cycle_see_earlier_tentative_reservations():
    state = cluster(nodes=1)
    state.add_gang(gang("a", gpus=6, created=0))
    state.add_gang(gang("b", gpus=6, created=1))
    result = Engine(state).cycle()
    assert [d.gang_uid for d in result.admitted] == ["a"]
    assert result.ledger.open_uids() == ["a"]


def test_rollback_returns_the_state_to_before_the_cycle():
    state = cluster(nodes=2, queues=(Queue("team-a", quota=gpu_quota(16)),))
    for i in range(3):
        state.add_gang(gang(f"g{i}", pods=2, gpus=3, created=i))
    before = snapshot(state)
    result = Engine(state).cycle()
    assert result.admitted
    result.ledger.rollback_all()
    assert snapshot(state) == before


def test_rolling_back_one_gang_keeps_the_others():
    state = cluster(nodes=2)
    state.add_gang(gang("a", gpus=4, created=0))
    state.add_gang(gang("b", gpus=4, created=1))
    result = Engine(state).cycle()
    result.ledger.rollback("a")
    result.ledger.commit("b")
    assert set(state.admitted) == {"b"} and "a" in state.pending


def test_commit_of_an_unknown_gang_is_refused():
    state = cluster()
    result = Engine(state).cycle()
    with pytest.raises(InvalidInput, match="has no open reservation"):
        result.ledger.commit("nope")


class EvictLowerPriority:
    """Test double: evict every admitted gang of lower priority than the preemptor."""

    name = "test-evict-lower"

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return True

    def victims(self, ctx: CycleContext, gang: Gang, reason: str):
        return [
            uid for uid, g in sorted(ctx.state.admitted_gangs.items()) if g.priority < gang.priority
        ]


def with_low_priority_gang(pods: int):
    """One node whose GPUs are partly or fully held by an admitted low-priority gang."""
    state = cluster(nodes=1)
    state.add_gang(gang("low", pods=pods, gpus=4))
    engine = Engine(state, preemption=EvictLowerPriority())
    engine.cycle().ledger.commit_all()
    return state, engine


def test_preemption_evicts_whole_gangs_and_admits_the_preemptor():
    state, engine = with_low_priority_gang(pods=2)
    state.add_gang(gang("high", pods=1, gpus=8, priority=5))
    result = engine.cycle()
    d = next(d for d in result.decisions if d.gang_uid == "high")
    assert d.outcome is Outcome.ADMITTED and d.victims == ("low",)
    assert "low" in state.pending and "low" not in state.admitted


def test_rolling_back_a_preemptor_restores_its_victims():
    state, engine = with_low_priority_gang(pods=2)
    low_reservation = state.admitted["low"]
    state.add_gang(gang("high", pods=1, gpus=8, priority=5))
    engine.cycle().ledger.rollback("high")
    assert state.admitted["low"] == low_reservation
    assert "high" in state.pending


def test_useless_evictions_are_undone():
    state = cluster(nodes=2)
    state.add_gang(gang("low", gpus=4))
    state.add_gang(gang("keeper", gpus=8, priority=9))  # not evictable by priority 5
    engine = Engine(state, preemption=EvictLowerPriority())
    engine.cycle().ledger.commit_all()
    state.add_gang(gang("huge", pods=2, gpus=8, priority=5))
    result = engine.cycle()
    d = next(d for d in result.decisions if d.gang_uid == "huge")
    assert d.outcome is Outcome.PENDING and "evicting low would not be enough" in d.reason
    assert "low" in state.admitted


def test_rolling_back_a_preemptor_first_rolls_back_later_gangs_using_freed_capacity():
    state, engine = with_low_priority_gang(pods=2)
    state.add_gang(gang("high", pods=1, gpus=4, priority=5, created=1))
    state.add_gang(gang("after", pods=1, gpus=4, priority=1, created=2))
    result = engine.cycle()
    assert [d.gang_uid for d in result.admitted] == ["high", "after"]
    assert result.ledger.rollback("high") == ["after", "high"]
    assert set(state.admitted) == {"low"} and state.violations() == []


def test_the_evictable_among_candidates_are_the_admitted_ones_not_touched_in_this_cycle():
    state = cluster(nodes=5)
    for uid in ("a", "b", "c", "d"):
        state.add_gang(gang(uid, gpus=8))
    Engine(state).cycle().ledger.commit_all()
    state.add_gang(gang("new", gpus=8))
    engine = Engine(state)
    ledger = engine.cycle().ledger  # "new" admitted in this cycle
    ledger.evict(["b"])
    ctx = CycleContext(state, ledger, Placer(state, BinPack()), engine.plan)
    waiting = gang("w", gpus=8)
    state.add_gang(waiting)
    named = [
        state.admitted_gangs.get(u) or state.pending[u] for u in ("d", "w", "c", "b", "new", "a")
    ]
    assert ctx.fits(waiting, ["c"], keep=True)  # c released by a kept probe: still admitted
    assert [g.uid for g in ctx.evictable_among(named)] == ["d", "c", "a"]
    assert ctx.evictable_among(named) == [g for g in named if ctx.evictable(g.uid)]
