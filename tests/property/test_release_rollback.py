"""Properties 3 and 6: release returns exactly what was reserved; rollback is exact."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from controller.engine.cycle import CycleResult
from tests.property.harness import (
    USAGE_FIELDS,
    Driver,
    Snapshot,
    property_settings,
    undo_and_redo,
)
from tests.property.strategies import Op, Scenario, scenarios


def check_release(sc: Scenario, rnd: random.Random) -> None:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    driver.check_release = True
    problems = driver.release_problems

    def shuffled(uids: list[str]) -> list[str]:
        rnd.shuffle(uids)
        return uids

    def after_cycle(d: Driver, op: Op, before: Snapshot, result: CycleResult) -> None:
        if op[1] == "commit":
            _, found = undo_and_redo(d.state, before, result, shuffled, False, USAGE_FIELDS)
            problems.extend(found)

    driver.after_cycle = after_cycle
    for step, op in enumerate(sc.ops):
        driver.apply(op)
        assert problems == [], f"after step {step} {op[:2]}"


@property_settings(150)
@given(scenarios(), st.randoms(use_true_random=False))
def test_release_returns_exactly_what_was_reserved(sc: Scenario, rnd: random.Random) -> None:
    """Invariant 5. Every release (explicit, or after the gang's node went away) removes
    exactly its pods' node usage, its claims' device holds and its charge. And for the
    gangs one cycle admitted: release them all, in any order (and restore whatever they
    evicted), and node usage, device owners and quota (leaf and pool) equal the snapshot
    taken before the cycle; restoring the same reservations gives the post-commit state."""
    check_release(sc, rnd)


def check_rollback(sc: Scenario) -> None:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    problems: list[str] = []

    def after_cycle(d: Driver, op: Op, before: Snapshot, result: CycleResult) -> None:
        if op[1] == "rollback":
            problems.extend(f"rollback_all: {p}" for p in before.diff(Snapshot.of(d.state)))
            if result.ledger.open_uids():
                problems.append(f"rollback_all left {result.ledger.open_uids()} open")
        elif op[1] == "mixed":
            _, found = undo_and_redo(d.state, before, result)
            problems.extend(f"mixed commit/rollback: {p}" for p in found)

    driver.after_cycle = after_cycle
    for step, op in enumerate(sc.ops):
        driver.apply(op)
        assert problems == [], f"after step {step} {op[:2]}"


@property_settings(150)
@given(scenarios())
def test_rollback_is_exact(sc: Scenario) -> None:
    """cycle() then rollback_all() leaves node usage, device owners, quota (leaf and pool),
    the pending set and the admitted reservations exactly as before the cycle. With per-gang
    commits and rollbacks (in admission order, as the controller writes them), the rolled
    back ones leave no trace: taking back the committed ones by hand gives the pre-cycle
    state. Rolling back never raises."""
    check_rollback(sc)
