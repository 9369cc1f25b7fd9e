"""'Can never fit' is never said of a gang that could fit: on the empty cluster, with no
usage anywhere, an engine that does not ask the feasibility check refuses every gang the
check condemns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.engine.cycle import Engine
from controller.engine.feasibility import NeverFit
from controller.engine.model import Gang
from controller.engine.state import ClusterState
from tests.property.harness import build_state, property_settings
from tests.property.strategies import ClusterSpec, cluster_specs, gangs


class NoVerdict(NeverFit):
    """An engine without the check: placement and quota alone decide."""

    def reason(self, state: ClusterState, gang: Gang) -> str | None:
        return None


@st.composite
def cluster_and_gang(draw: st.DrawFn) -> tuple[ClusterSpec, Gang]:
    spec = draw(cluster_specs())
    return spec, draw(gangs(spec.leaves))


@property_settings(300)
@given(cluster_and_gang())
def test_a_gang_said_never_to_fit_is_not_admitted_on_the_empty_cluster(case) -> None:
    spec, gang = case
    state = build_state(spec)
    verdict = NeverFit().reason(state, gang)
    state.add_gang(gang)
    result = Engine(state, never_fit=NoVerdict()).cycle()
    if verdict is not None:
        assert not result.admitted, f"admitted although {verdict}"
