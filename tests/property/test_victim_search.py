"""The victim search's shortcuts (counting before probing, victims kept released between
probes) change what a search costs, never what it decides."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from unittest import mock

from hypothesis import given, target
from hypothesis import strategies as st

from controller.engine import cycle
from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.model import Gang, Queue
from controller.engine.state import ClusterState
from policies.registry import PolicyRef, create_preemption
from tests.builders import cluster, gang, gpu_quota
from tests.property.harness import (
    REAL_PREEMPTION,
    Driver,
    Snapshot,
    decision_record,
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
