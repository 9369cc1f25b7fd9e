"""One bad object never stops the cycle: bad gangs and faulty plug-ins in random clusters."""

from __future__ import annotations

from hypothesis import given

from controller.engine.cycle import CycleResult, Outcome
from tests.property.faulty import is_bad, make_faulty
from tests.property.harness import (
    Driver,
    Snapshot,
    all_or_nothing_problems,
    invariant_problems,
    property_settings,
    undo_and_redo,
)
from tests.property.strategies import FaultScenario, Op, fault_scenarios


def check_faults(fs: FaultScenario) -> None:
    sc = fs.scenario
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    make_faulty(driver.engine, fs.plan)
    added: dict[str, bool] = {}  # uid -> is bad
    problems: list[str] = []

    def after_cycle(d: Driver, op: Op, before: Snapshot, result: CycleResult) -> None:
        uids = [dec.gang_uid for dec in result.decisions]
        if len(set(uids)) != len(uids):
            problems.append(f"a gang decided twice in one cycle: {uids}")
        for dec in result.decisions:
            if dec.gang_uid not in added:
                problems.append(f"decision for {dec.gang_uid}, which was never added")
            elif added[dec.gang_uid] and dec.outcome is Outcome.ADMITTED:
                problems.append(f"bad gang {dec.gang_uid} admitted")
            elif added[dec.gang_uid] and not dec.reason.startswith("pod set ps0: claim bad:"):
                problems.append(f"bad gang {dec.gang_uid}: reason {dec.reason!r}")
            if "\n" in dec.reason:
                problems.append(f"{dec.gang_uid}: reason spans lines: {dec.reason!r}")
        if op[1] == "rollback":
            problems.extend(f"rollback_all: {p}" for p in before.diff(Snapshot.of(d.state)))
        elif op[1] == "mixed":
            _, found = undo_and_redo(d.state, before, result)
            problems.extend(f"mixed commit/rollback: {p}" for p in found)
        if result.ledger.open_uids():
            problems.append(f"ledger left open: {result.ledger.open_uids()}")

    driver.after_cycle = after_cycle
    for step, op in enumerate(sc.ops):
        if op[0] == "add":
            gang = op[1]
            added[gang.uid] = is_bad(gang)  # type: ignore[union-attr]
        driver.apply(op)
        problems += invariant_problems(driver.state) + all_or_nothing_problems(driver.state)
        assert problems == [], f"after step {step} {op[:2]} with {fs.plan}"


@property_settings(150)
@given(fault_scenarios())
def test_bad_gangs_and_faulty_plug_ins_never_stop_the_cycle(fs: FaultScenario) -> None:
    """Gangs whose request selector does not compile, and one plug-in (ordering,
    preemption or placement) that raises or breaks its contract from a drawn call on:
    every cycle returns; its decisions name only gangs that exist, each once, never admit a
    bad gang and give it a one-line reason naming the selector; the invariants hold after
    every step; and committing, rolling back, or mixing both leaves exactly the state the
    ledger promises."""
    check_faults(fs)
