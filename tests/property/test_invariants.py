"""Properties 1 and 2: invariants 1, 2, 4 (+ bookkeeping) and 3 over random operation runs."""

from __future__ import annotations

from hypothesis import given

from controller.engine.cycle import CycleResult
from tests.property.harness import (
    Driver,
    Snapshot,
    admitted_in,
    all_or_nothing_problems,
    invariant_problems,
    property_settings,
)
from tests.property.strategies import Op, Scenario, scenarios


def check_invariants(sc: Scenario) -> None:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    assert invariant_problems(driver.state) == [], "initial state"
    for step, op in enumerate(sc.ops):
        driver.apply(op)
        problems = invariant_problems(driver.state)
        assert problems == [], f"after step {step} {op[:2]}"


@property_settings(150)
@given(scenarios())
def test_invariants_hold_after_any_operation_sequence(sc: Scenario) -> None:
    """After every step: no double allocation, no node over allocatable, no queue over its
    limits, node usage = holders, incremental quota pool usage = recomputed, and the
    derived indexes (free cpu, match-set free counts, pending order) agree with the state."""
    check_invariants(sc)


def check_all_or_nothing(sc: Scenario) -> None:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    problems: list[str] = []

    def after_cycle(d: Driver, op: Op, before: Snapshot, result: CycleResult) -> None:
        state = d.state
        for uid in admitted_in(result):
            if uid not in state.admitted and uid not in state.pending:
                problems.append(f"gang {uid} admitted, then neither admitted nor pending")
        for uid in set(before.pending) - set(state.admitted) - set(state.pending):
            problems.append(f"gang {uid} was pending and vanished")
        kept = {
            v for dec in result.decisions if dec.gang_uid in state.admitted for v in dec.victims
        }
        for uid in set(before.admitted) - set(state.admitted) - kept:
            problems.append(f"gang {uid} lost its admission, not evicted for an admitted gang")
        for res in d.last_commits:
            if state.admitted.get(res.gang_uid) != res:
                problems.append(
                    f"ledger committed gang {res.gang_uid}'s reservation, but the state holds "
                    f"{state.admitted.get(res.gang_uid)} for it"
                )

    driver.after_cycle = after_cycle
    for step, op in enumerate(sc.ops):
        driver.apply(op)
        problems += all_or_nothing_problems(driver.state)
        assert problems == [], f"after step {step} {op[:2]}"


@property_settings(150)
@given(scenarios())
def test_gangs_are_all_or_nothing(sc: Scenario) -> None:
    """Invariant 3. Every admitted gang holds all its pods and each claim exactly what its
    requests ask for (on the pod's node, matching selectors and matchAttribute, within a
    required topology domain); device owners and node usage are exactly admitted
    reservations + foreign holders, so nothing is held by a gang that is not admitted
    (rolled back, released, evicted); and what the ledger commits is what the state holds."""
    check_all_or_nothing(sc)
