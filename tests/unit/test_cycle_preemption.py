"""How the cycle asks the preemption policy: only when it could help, once per queue
and cycle when searches fail, and not again until something changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.model import Gang, Queue
from controller.engine.state import ClusterState
from tests.builders import cluster, gang


@dataclass
class CountingNone:
    """Says victims could exist, never names any, and counts the searches."""

    helps: bool = True
    searched: list[str] = field(default_factory=list)
    name: str = "test-counting"

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return self.helps

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        self.searched.append(gang.uid)
        return ()


def full_cluster(policy: CountingNone, *waiting: Gang) -> Engine:
    state = cluster(nodes=1, queues=(Queue("team-a"), Queue("team-b")))
    engine = Engine(state, preemption=policy)
    state.add_gang(gang("running", gpus=8))
    engine.cycle(now=0).ledger.commit_all()
    for g in waiting:
        state.add_gang(g)
    return engine


def test_no_search_when_the_policy_says_no_victim_could_exist():
    policy = CountingNone(helps=False)
    full_cluster(policy, gang("w", gpus=8)).cycle(now=1)
    assert policy.searched == []


def test_each_queue_gets_one_failed_search_per_cycle():
    policy = CountingNone()
    waiting = [gang(f"a{i}", gpus=8, created=i) for i in range(3)] + [
        gang("b0", gpus=8, queue="team-b", created=9)
    ]
    full_cluster(policy, *waiting).cycle(now=1)
    assert policy.searched == ["a0", "b0"]


def test_a_failed_search_is_not_repeated_until_someone_is_admitted_or_released():
    policy = CountingNone()
    engine = full_cluster(policy, gang("w", gpus=8))
    engine.cycle(now=1)
    engine.cycle(now=2)
    assert policy.searched == ["w"]
    engine.state.add_gang(gang("small", gpus=0, queue="team-b"))
    engine.cycle(now=3).ledger.commit_all()  # admits small: the running set changed
    engine.cycle(now=4)  # small, admitted in w's last search's cycle, is a candidate now
    engine.cycle(now=5)
    assert policy.searched == ["w", "w", "w"]


def test_a_remembered_failure_counts_as_its_queues_search_like_a_fresh_engine():
    policy = CountingNone()
    engine = full_cluster(policy, gang("a0", gpus=8, created=1))
    engine.cycle(now=1)
    engine.state.add_gang(gang("a1", gpus=8, created=2))
    engine.cycle(now=2)
    assert policy.searched == ["a0"]
