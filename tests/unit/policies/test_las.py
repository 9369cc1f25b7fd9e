"""las: discretised least attained service, FIFO within a level, starvation promotion."""

from __future__ import annotations

import pytest

from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.model import Queue
from controller.engine.state import ClusterState
from policies.ordering import LeastAttainedService
from tests.builders import cluster, gang


def offered(policy: LeastAttainedService, state: ClusterState, now: float, queue=None):
    state.now = now
    ctx = CycleContext(state, None, None, None)  # type: ignore[arg-type]
    return [g.uid for g in policy.order(ctx, queue)]


def served(state: ClusterState, uid: str, gpus: int, start: float, end: float, policy=None):
    """Run `uid` on `gpus` GPUs from `start` to `end` (admitted under `policy`), then put it
    back in pending as a preemption does."""
    if uid not in state.pending:
        state.now = start
        state.add_gang(gang(uid, gpus=gpus))
    result = Engine(state, ordering=policy or LeastAttainedService()).cycle(now=start)
    result.ledger.commit_all()
    assert uid in state.admitted
    state.now = end
    state.release(uid, requeue=True)


@pytest.mark.parametrize(
    ("service", "level"),
    [(0, 0), (99, 0), (100, 1), (999, 1), (1000, 2), (5000, 2)],
)
def test_the_level_is_the_number_of_thresholds_at_or_below_the_attained_service(service, level):
    state = cluster(nodes=1)
    served(state, "g", gpus=1, start=0, end=service)
    assert state.attained_service("g") == service
    assert LeastAttainedService(thresholds=(100, 1000)).level(state, "g") == level


def test_a_gang_is_demoted_behind_newer_ones_once_it_passes_a_threshold():
    state = cluster(nodes=1)
    served(state, "veteran", gpus=8, start=0, end=100)  # 800 GPU-seconds
    state.add_gang(gang("newcomer", gpus=8, created=50))
    policy = LeastAttainedService(thresholds=(500,), promote_after_seconds=None)
    assert offered(policy, state, now=100) == ["newcomer", "veteran"]
    assert offered(LeastAttainedService(thresholds=(1000,)), state, now=100) == [
        "veteran",
        "newcomer",
    ]


def test_within_a_level_the_older_gang_goes_first_whatever_its_priority():
    state = cluster(nodes=1)
    state.add_gang(gang("old-low", gpus=8, created=0))
    state.add_gang(gang("new-high", gpus=8, created=1, priority=10))
    assert offered(LeastAttainedService(), state, now=0) == ["old-low", "new-high"]


def test_a_gang_waiting_longer_than_promote_after_is_promoted_until_it_runs_again():
    state = cluster(nodes=1)
    served(state, "veteran", gpus=8, start=0, end=100)  # pending again since t=100
    state.add_gang(gang("newcomer", gpus=8, created=50))
    policy = LeastAttainedService(thresholds=(500,), promote_after_seconds=1000)
    assert offered(policy, state, now=1100) == ["newcomer", "veteran"]  # waited exactly 1000
    assert offered(policy, state, now=1101) == ["veteran", "newcomer"]
    served(state, "veteran", gpus=8, start=1200, end=1300, policy=policy)  # waiting restarts
    assert offered(policy, state, now=1300) == ["newcomer", "veteran"]
    assert offered(policy, state, now=2301) == ["veteran", "newcomer"]


def test_without_promote_after_a_demoted_gang_waits_behind_newer_ones_forever():
    state = cluster(nodes=1)
    served(state, "veteran", gpus=8, start=0, end=100)
    state.add_gang(gang("newcomer", gpus=8, created=50))
    policy = LeastAttainedService(thresholds=(500,), promote_after_seconds=None)
    assert offered(policy, state, now=10**9) == ["newcomer", "veteran"]


def test_for_one_queue_las_offers_only_that_queues_gangs():
    state = cluster(nodes=1, queues=(Queue("team-a"), Queue("team-b")))
    state.add_gang(gang("a1", gpus=8, created=1))
    state.add_gang(gang("b1", gpus=8, created=0, queue="team-b"))
    assert offered(LeastAttainedService(), state, now=0, queue="team-a") == ["a1"]
