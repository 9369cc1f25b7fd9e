"""Indexes of who runs, caught up from the state's admission journal (preemption's
`AdmittedIndex` and `BorrowingIndex`, reclaim's views of a queue, fair-share's memos of
sides and shares): after any sequence of admissions (committed or rolled back, what-if
probes in between), releases, gangs deleted pending or running, controller restarts and
queue changes, each is what one built from scratch on the state now says."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

from hypothesis import given, target
from hypothesis import strategies as st

from controller.engine import state as state_module
from controller.engine.model import Gang, PodSet
from controller.engine.reservation import Reservation
from controller.engine.state import ClusterState
from policies.preemption import (
    AdmittedIndex,
    BorrowingIndex,
    FairSharePreemption,
    ReclaimPreemption,
)
from tests.property.harness import Driver, property_settings
from tests.property.strategies import Scenario, admission_churn_scenarios

Held = list[tuple[str, Gang, Reservation]]


def running(state: ClusterState) -> dict[str, Held]:
    """Per queue, its admitted gangs with their reservations, by uid."""
    out: dict[str, Held] = {}
    for uid, gang in sorted(state.admitted_gangs.items()):
        out.setdefault(gang.queue, []).append((uid, gang, state.admitted[uid]))
    return out


def index_problems(
    state: ClusterState, index: AdmittedIndex, before: dict[str, tuple[Held, object]]
) -> tuple[list[str], int]:
    """Where `index` differs from the admitted gangs now; a queue whose gangs or their
    reservations changed since `before` (queue -> what ran, its stamp then) must have a
    new stamp. Updates `before`. Also returns how many gangs run again, unseen, under a
    new reservation (released and admitted again since the last look)."""
    problems: list[str] = []
    now = running(state)
    held_before = {uid: res for held, _ in before.values() for uid, _, res in held}
    again = sum(1 for uid, res in state.admitted.items() if held_before.get(uid, res) is not res)
    everyone = sorted(state.admitted_gangs)
    if index.queues(state) != sorted(now):
        problems.append(f"queues {index.queues(state)} != {sorted(now)}")
    if [g.uid for g in index.gangs(state, None)] != everyone:
        problems.append("gangs of all queues differ")
    low = min((g.priority for g in state.admitted_gangs.values()), default=None)
    if index.min_priority(state, None) != low:
        problems.append(f"lowest priority anywhere {index.min_priority(state, None)} != {low}")
    for q in sorted(set(now) | set(state.quota.names()) | set(before)):
        held = now.get(q, [])
        gangs = index.gangs(state, q)
        if [(g.uid, g) for g in gangs] != [(uid, g) for uid, g, _ in held]:
            problems.append(f"{q}: gangs {[g.uid for g in gangs]} != {[u for u, _, _ in held]}")
        low = min((g.priority for _, g, _ in held), default=None)
        if index.min_priority(state, q) != low:
            problems.append(f"{q}: lowest priority {index.min_priority(state, q)} != {low}")
        stamp = index.stamp(state, q)
        was = before.get(q)
        if was is not None and was[1] is stamp:
            same = len(was[0]) == len(held) and all(
                a[0] == b[0] and a[1] is b[1] and a[2] is b[2]
                for a, b in zip(was[0], held, strict=True)
            )
            if not same:
                problems.append(f"{q}: stamp kept although its gangs or reservations changed")
        before[q] = (held, stamp)
    return problems, again


def borrowing_now(state: ClusterState) -> dict[str, frozenset[str]]:
    quota = state.quota
    found = {
        name: frozenset(r for r in quota.managed(name) if quota.borrowed(name, r))
        for name in quota.names()
    }
    return {name: borrowed for name, borrowed in found.items() if borrowed}


def probe(queue: str, gpus: int) -> Gang:
    """A gang of one pod on `queue` asking for what a GPU gang's quota charge names."""
    requests = {"cpu": 1000, "devices/gpu.example.com": gpus}
    return Gang(f"probe-{queue}-{gpus}", "probe", "default", queue, (PodSet("p", 1, requests),))


def reclaim_problems(state: ClusterState, kept: ReclaimPreemption) -> list[str]:
    """Where the kept policy's views of each leaf differ from a fresh policy's."""
    fresh = ReclaimPreemption(priority=kept.priority)
    problems = []
    for q in state.quota.names():
        mine, theirs = kept._view(state, q), fresh._view(state, q)
        if mine != theirs or (mine and theirs and mine.lending != theirs.lending):
            problems.append(f"reclaim view of {q}: {mine} != {theirs}")
    return problems


def fair_share_problems(state: ClusterState, kept: FairSharePreemption) -> list[str]:
    """Where the kept policy's memos (pairs of sides, a side's rivals and share, the
    preemptor's shares with a gang, `could_help`) differ from a fresh policy's."""
    fresh = FairSharePreemption()
    problems = []
    quota = state.quota
    for q in quota.names():
        pairs = kept._pairs(state, q)
        if pairs != fresh._pairs(state, q):
            problems.append(f"pairs of {q} differ")
        for other, _, side in pairs:
            if kept._side_rivals(state, other, side) != fresh._side_rivals(state, other, side):
                problems.append(f"rivals of {other} on side {side} differ")
            if kept._side_share(state, side) != fresh._side_share(state, side):
                problems.append(f"share of side {side} differs")
        for gpus in (1, 4):
            g = probe(q, gpus)
            if kept._mine(state, g) != fresh._mine(state, g):
                problems.append(f"shares of {q}'s sides with {gpus} GPUs differ")
            if quota.admission_blocker(q) is None and kept.could_help(state, g) != fresh.could_help(
                state, g
            ):
                problems.append(f"could_help for {q} with {gpus} GPUs differs")
    return problems


@property_settings(300)
@given(admission_churn_scenarios(), st.booleans(), st.lists(st.booleans(), max_size=40))
def test_indexes_caught_up_from_the_journal_are_those_built_from_scratch(
    sc: Scenario, overflow: bool, skip: list[bool]
) -> None:
    """After operations of a drawn run (the engine's cycles probing with its own
    policy, which indexes who runs too), long-lived indexes and policies that follow the
    state's admission journals (across a restart: a new state) answer as ones built
    from scratch: after every operation but those `skip` draws (so that a gang may be
    released and admitted again between two looks), and at the end. With `overflow`,
    journals stop listing after a few changes, and readers start over from the state."""
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    driver.record_errors = True
    index, borrowing = AdmittedIndex(), BorrowingIndex()
    reclaim = ReclaimPreemption()
    fair_share = FairSharePreemption()
    engine_policy = driver.engine.preemption
    stamps: dict[str, tuple[Held, object]] = {}
    slack = 0 if overflow else state_module.JOURNAL_SLACK
    readmitted = 0
    with mock.patch.object(state_module, "JOURNAL_SLACK", slack):
        for step, op in enumerate(sc.ops):
            driver.apply(op)
            if step < len(skip) and skip[step] and step < len(sc.ops) - 1:
                continue
            state = driver.state
            problems, again = index_problems(state, index, stamps)
            readmitted += again
            if borrowing.get(state) != borrowing_now(state):
                problems.append(f"borrowing {borrowing.get(state)} != {borrowing_now(state)}")
            for policy in (reclaim, fair_share, engine_policy):
                if isinstance(policy, ReclaimPreemption):
                    problems += reclaim_problems(state, policy)
                elif isinstance(policy, FairSharePreemption):
                    problems += fair_share_problems(state, policy)
            assert not problems, f"after op {step} {op[0]}: {problems}"
    target(float(readmitted), label="gangs admitted again unseen")
    # each queue's first gang released and held again under a copy of its reservation
    state = driver.state
    for held in running(state).values():
        uid, gang, _ = held[0]
        res = state.release(uid)
        state.restore(gang, replace(res), trusted=True)
        problems, again = index_problems(state, index, stamps)
        assert again == 1 and not problems, f"{uid} held again: {problems}"
