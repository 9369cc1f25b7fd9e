"""Placement never refuses what it could place, and a failed attempt leaves no trace."""

from __future__ import annotations

from hypothesis import given

from controller.engine.placement import GangPlan, Placer
from controller.engine.policy import BinPack
from controller.engine.state import ClusterState
from tests.property.harness import Driver, Snapshot, property_settings
from tests.property.strategies import Scenario, scenarios


class SearchOnly(Placer):
    """The same placer without its fast 'cannot fit' precheck."""

    def _precheck(self, plan: GangPlan) -> str | None:
        return None


def precheck_problems(state: ClusterState, search_bound: int) -> list[str]:
    """For every pending gang: if the precheck refuses it, the search must fail too; and
    trying must leave the state as it was."""
    out = []
    real = Placer(state, BinPack(), search_bound)
    search = SearchOnly(state, BinPack(), search_bound)
    for gang in list(state.pending.values()):
        plan = GangPlan.of(gang, 0)
        reason = real._precheck(plan)
        if reason is None:
            continue
        before = Snapshot.of(state)
        outcome = search.place(plan)
        if outcome.pods is not None:
            for pod in reversed(outcome.pods):
                state.release_pod(gang.uid, pod)
            out.append(f"gang {gang.uid}: precheck refuses ({reason}) what the search places")
        out += [f"gang {gang.uid}: trying left {p}" for p in before.diff(Snapshot.of(state))]
    return out


def check_precheck(sc: Scenario) -> None:
    driver = Driver.of(sc.spec, sc.preempt, ordering=sc.ordering)
    for step, op in enumerate(sc.ops):
        driver.apply(op)
        if op[0] == "cycle":
            problems = precheck_problems(driver.state, driver.engine.search_bound)
            assert problems == [], f"after step {step} {op[:2]}"


@property_settings(100)
@given(scenarios())
def test_precheck_never_refuses_a_gang_the_search_can_place(sc: Scenario) -> None:
    """`Placer._precheck` is documented as a fast necessary condition ("cannot fit" from
    free-device counts): whenever it refuses a pending gang, the search it short-cuts must
    fail as well."""
    check_precheck(sc)
