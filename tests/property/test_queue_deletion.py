"""Queue deletion (defined in quota.py): a live engine, through any sequence of queue
deletions, re-publications and additions and of gang admissions and releases, decides
what a controller restarted on the same objects would decide."""

from __future__ import annotations

from hypothesis import given

from controller.engine.cycle import CycleResult, Engine, Outcome
from controller.engine.model import Gang, PodSet
from controller.engine.state import ClusterState
from tests.property.harness import (
    Driver,
    clock,
    make_engine,
    nonzero,
    property_settings,
    rebuild,
)
from tests.property.strategies import QUOTA_RESOURCES, Scenario, queue_churn_scenarios


def probe(queue: str) -> Gang:
    return Gang("probe", "probe", "default", queue, (PodSet("p", 1, {"cpu": 1}),))


def blockers(state: ClusterState, queues: set[str]) -> dict[str, str | None]:
    """What `queue_blocker` says for every pending gang and for a gang on every queue."""
    out = {f"gang {g.uid}": state.queue_blocker(g) for g in state.pending.values()}
    out |= {f"queue {q}": state.queue_blocker(probe(q)) for q in sorted(queues)}
    return out


def tree(state: ClusterState) -> dict[str, object]:
    q = state.quota
    return {
        name: (
            q.get(name),
            q.is_deleted(name),
            q.children(name),
            nonzero(q.pool_usage(name)),
            [q.headroom(name, r) for r in QUOTA_RESOURCES],
        )
        for name in q.names()
    }


def admissions(result: CycleResult) -> list[tuple[object, ...]]:
    return [
        (d.gang_uid, d.reservation, d.victims)
        for d in result.decisions
        if d.outcome is Outcome.ADMITTED
    ]


def check_live_equals_rebuilt(sc: Scenario) -> None:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    driver.delete_any_queue = True
    queues = {q.name for q in sc.spec.queues} | {"missing"}
    rebuilt_admissions: list[tuple[object, ...]] = []
    problems: list[str] = []

    def after_cycle(d: Driver, op: object, before: object, result: CycleResult) -> None:
        if admissions(result) != rebuilt_admissions:
            problems.append(
                f"live engine admitted {admissions(result)}, rebuilt {rebuilt_admissions}"
            )

    driver.after_cycle = after_cycle
    for step, op in enumerate(sc.ops):
        if op[0] == "cycle":
            driver.state.now = clock(driver.step + 1)  # when the driver's cycle runs
            fresh: Engine = make_engine(rebuild(driver.state), sc.preempt, sc.ordering)
            result = fresh.cycle()
            rebuilt_admissions[:] = admissions(result)
            result.ledger.rollback_all()
        driver.apply(op)
        queues |= set(driver.state.quota.names())
        rebuilt = rebuild(driver.state)
        if tree(driver.state) != tree(rebuilt):
            problems.append(f"queue tree {tree(driver.state)} != rebuilt {tree(rebuilt)}")
        live, fresh_answers = blockers(driver.state, queues), blockers(rebuilt, queues)
        problems += [
            f"{k}: live blocker {live[k]!r}, rebuilt {fresh_answers[k]!r}"
            for k in live
            if live[k] != fresh_answers[k]
        ]
        assert problems == [], f"after step {step} {op[:2]}"


@property_settings(150)
@given(queue_churn_scenarios())
def test_a_live_engine_decides_as_one_rebuilt_from_the_same_objects(sc: Scenario) -> None:
    """After every operation the queue tree (specs, deleted marks, children, pool usage,
    headroom) and every queue_blocker answer (each pending gang, a gang on every queue
    ever seen) equal those of a state rebuilt from the current objects; before every
    cycle, a fresh engine on a rebuilt state admits the same gangs with the same
    reservations and victims as the live engine then does."""
    check_live_equals_rebuilt(sc)
