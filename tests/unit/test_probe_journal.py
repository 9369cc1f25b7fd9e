"""What-if probes and the admission journal: readers (indexes of who runs) catch up on
what really changed, not on every gang a victim search released and put back."""

from __future__ import annotations

from controller.engine.context import CycleContext
from controller.engine.model import Gang
from controller.engine.state import AdmissionJournal, ClusterState
from tests.unit.test_probe_again import probe, racks, run_on, waiting


def busy_racks() -> tuple[ClusterState, AdmissionJournal]:
    """Two full nodes running u and v, and a journal drained after that."""
    state = racks(n0=("r0", 4), n1=("r0", 4))
    run_on(state, "n0", "u", 4)
    run_on(state, "n1", "v", 4)
    journal = state.admission_journal()
    journal.drain()
    return state, journal


def probed_both(state: ClusterState) -> tuple[CycleContext, Gang]:
    """A one-GPU gang probed with u evicted, then with v evicted, both kept."""
    w = waiting(state, 1)
    ctx = probe(state)
    assert ctx.fits(w, ["u"], keep=True)
    assert ctx.fits(w, ["v"], keep=True)
    return ctx, w


def test_gangs_a_probe_released_and_put_back_are_not_journaled():
    state, journal = busy_racks()
    ctx, _ = probed_both(state)
    ctx.settle()
    assert journal.drain() == set()


def test_victims_a_search_hands_over_are_journaled_as_released():
    state, journal = busy_racks()
    ctx, w = probed_both(state)
    assert ctx.take(w, ["v"]) is not None
    assert journal.drain() == {("v", "team-a", "team-a")}


def test_a_release_outside_probes_is_journaled():
    state, journal = busy_racks()
    state.release("u")
    assert journal.drain() == {("u", "team-a", "team-a")}
