"""The cycle's memos (failed shapes and gangs skipped until something changes) and its
lazy walk over groups of alike gangs only save time: a long-lived engine admits exactly
what a fresh engine walking every pending gang admits on the same state."""

from __future__ import annotations

from hypothesis import given

from controller.engine.cycle import CycleResult, Outcome
from tests.property.harness import Driver, Snapshot, clock, make_engine, property_settings
from tests.property.strategies import Op, Scenario, scenarios


def admissions(result: CycleResult) -> list[tuple[str, object]]:
    return [(d.gang_uid, d.reservation) for d in result.decisions if d.outcome is Outcome.ADMITTED]


def check_memo(sc: Scenario) -> None:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    problems: list[str] = []
    fresh_admissions: list[tuple[str, object]] = []

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
@given(scenarios(max_ops=30, preemption=False, copies=30, orderings=("priority", "sjf")))
def test_lazy_walk_over_repeated_shapes_admits_what_the_whole_walk_admits(sc: Scenario) -> None:
    """Backlogs of many gangs of few shapes, under the orderings the engine walks lazily
    (group heads merged by key, a group left at its first shared failure): the same
    admissions as a fresh engine that tries every pending gang, cycle after cycle."""
    check_memo(sc)
