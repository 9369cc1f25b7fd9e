"""A cycle costs what changed: with a large backlog it looks at groups, not gangs."""

from __future__ import annotations

from controller.engine.cycle import Engine
from tests.builders import cluster, gang


def filled(waiting: int) -> tuple[Engine, list[str]]:
    """One node of 8 GPUs held by one gang; `waiting` gangs of two shapes behind it."""
    state = cluster(nodes=1)
    state.add_gang(gang("holder", pods=1, gpus=8, created=-1))
    for i in range(waiting):
        state.add_gang(gang(f"w{i:04d}", pods=1, gpus=8 if i % 2 else 4, created=i))
    engine = Engine(state)
    result = engine.cycle()
    result.ledger.commit_all()
    return engine, [d.gang_uid for d in result.admitted]


def test_a_full_cluster_leaves_every_waiting_group_asleep():
    engine, admitted = filled(1000)
    assert admitted == ["holder"]
    result = engine.cycle()
    assert result.considered == 0 and result.decisions == []


def test_a_release_wakes_only_the_groups_that_could_use_it():
    engine, _ = filled(1000)
    engine.state.release("holder")
    engine.state.remove_gang("holder")
    result = engine.cycle()
    assert [d.gang_uid for d in result.admitted] == ["w0000", "w0002"]
    assert result.considered <= 4


def test_newcomers_behind_a_failed_gang_of_their_shape_are_told_why():
    engine, _ = filled(300)
    engine.state.add_gang(gang("late", pods=1, gpus=4, created=10_000))
    result = engine.cycle()
    assert [d.gang_uid for d in result.decisions] == ["late"]
    assert "(same shape as gang" in result.decisions[0].reason
