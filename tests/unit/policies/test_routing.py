"""Per-queue policy routing: a Queue's own ordering, preemption and placement."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controller.engine.model import Queue
from controller.engine.policy import BinPack, FifoWithinPriority, NoPreemption
from policies import registry, routing
from policies.registry import PolicyRef, UnknownPolicy
from policies.routing import PerQueueOrdering, PolicySelection
from tests.builders import cluster, engine, gang


@dataclass
class Recorder:
    """FIFO within priority, or its reverse; remembers what it was told about."""

    name = "test-recorder"
    newest_first: bool = False
    limit: int = 1000
    seen: list[str] = field(default_factory=list, init=False)

    def order(self, ctx, queue=None):
        gangs = list(ctx.state.pending_in_order(queue))
        return iter((gangs[::-1] if self.newest_first else gangs)[: self.limit])

    def observe(self, gang, admitted):
        self.seen.append(gang.uid)


class FifoAlias(FifoWithinPriority):
    name = "test-fifo"


class NoneAlias(NoPreemption):
    name = "test-none"


class AlwaysHelps(NoPreemption):
    name = "test-always-helps"

    def could_help(self, state, gang):
        return True


class BinPackAlias(BinPack):
    name = "test-bin-pack"


class OtherBinPack(BinPack):
    name = "test-other-bin-pack"


LOCAL = (Recorder, FifoAlias, NoneAlias, AlwaysHelps, BinPackAlias, OtherBinPack)
PLAIN = PolicySelection(PolicyRef("test-fifo"), PolicyRef("test-none"), PolicyRef("test-bin-pack"))


@pytest.fixture(autouse=True)
def local(monkeypatch):
    """Test-local policies registered as built-ins, and the defaults pointed at them."""
    for cls in LOCAL:
        monkeypatch.setitem(registry._builtin[registry.kind_of(cls)], cls.name, cls)
    monkeypatch.setattr(routing, "DEFAULTS", PLAIN)


def two_queues(*gangs):
    state = cluster(nodes=1, queues=(Queue("team-a"), Queue("team-b")))
    for g in gangs:
        state.add_gang(g)
    return state


def attempts(policies, state):
    """Uids in the order the cycle tried them (each fits, so each is admitted)."""
    result = engine(state, **vars(policies)).cycle()
    return [d.gang_uid for d in result.decisions]


# a1, b1, a2, b2 in cluster-wide FIFO order; one GPU each, all fit.
FOUR = (
    gang("a1", gpus=1, queue="team-a", created=0),
    gang("b1", gpus=1, queue="team-b", created=1),
    gang("a2", gpus=1, queue="team-a", created=2),
    gang("b2", gpus=1, queue="team-b", created=3),
)


def test_without_overrides_the_cluster_policies_are_used_unwrapped():
    policies = routing.build(PLAIN)
    assert (type(policies.ordering), type(policies.preemption), type(policies.placement)) == (
        FifoAlias,
        NoneAlias,
        BinPackAlias,
    )


def test_unset_cluster_choices_take_the_defaults():
    policies = routing.build(PolicySelection(ordering=PolicyRef("test-recorder")))
    assert (type(policies.ordering), type(policies.preemption), type(policies.placement)) == (
        Recorder,
        NoneAlias,
        BinPackAlias,
    )


def test_the_shipped_defaults_are_priority_no_preemption_and_bin_pack(monkeypatch):
    monkeypatch.undo()
    assert (
        PolicySelection(PolicyRef("priority"), PolicyRef("none"), PolicyRef("bin-pack"))
        == routing.DEFAULTS
    )


def test_a_queue_with_its_own_ordering_fills_its_turns_in_its_own_order():
    policies = routing.build(
        PLAIN,
        {"team-b": PolicySelection(ordering=PolicyRef("test-recorder", {"newest_first": True}))},
    )
    assert isinstance(policies.ordering, PerQueueOrdering)
    assert attempts(policies, two_queues(*FOUR)) == ["a1", "b2", "a2", "b1"]


def test_a_queue_whose_own_order_stops_gives_up_its_remaining_turns():
    policies = routing.build(
        PLAIN, {"team-b": PolicySelection(ordering=PolicyRef("test-recorder", {"limit": 1}))}
    )
    assert attempts(policies, two_queues(*FOUR)) == ["a1", "b1", "a2"]


def test_queue_policy_observes_its_gangs_and_the_cluster_policy_its_turns():
    policies = routing.build(
        PolicySelection(ordering=PolicyRef("test-recorder")),
        {"team-b": PolicySelection(ordering=PolicyRef("test-recorder", {"newest_first": True}))},
    )
    attempts(policies, two_queues(*FOUR))
    assert isinstance(policies.ordering, PerQueueOrdering)
    assert policies.ordering.default.seen == ["a1", "b1", "a2", "b2"]
    assert policies.ordering.queues["team-b"].seen == ["b2", "b1"]


def test_preemption_follows_the_gang_queue():
    policies = routing.build(
        PLAIN, {"team-b": PolicySelection(preemption=PolicyRef("test-always-helps"))}
    )
    state = two_queues()
    helps = [policies.preemption.could_help(state, gang(g, queue=g)) for g in ("team-a", "team-b")]
    assert helps == [False, True]


def test_placement_follows_the_gang_queue():
    policies = routing.build(
        PLAIN, {"team-b": PolicySelection(placement=PolicyRef("test-other-bin-pack"))}
    )
    chosen = [type(policies.placement.for_gang(gang("g", queue=q))) for q in ("team-a", "team-b")]
    assert chosen == [BinPackAlias, OtherBinPack]


def test_a_bad_queue_choice_names_the_queue():
    with pytest.raises(UnknownPolicy) as err:
        routing.build(PLAIN, {"team-b": PolicySelection(placement=PolicyRef("sprad"))})
    assert str(err.value).startswith(
        "queue team-b: policies.placement: no placement policy named 'sprad'; available: "
    )


def test_a_bad_cluster_choice_is_prefixed_by_where():
    with pytest.raises(UnknownPolicy, match=r"^settings\.ordering: no ordering policy named 'x'"):
        routing.build(PolicySelection(ordering=PolicyRef("x")), where="settings")


# PolicySelection -----------------------------------------------------------------------


def test_selection_parses_names_and_name_params_maps():
    sel = PolicySelection.parse(
        {"ordering": "test-fifo", "placement": {"name": "test-bin-pack", "params": {}}}, "q"
    )
    assert sel == PolicySelection(PolicyRef("test-fifo"), None, PolicyRef("test-bin-pack"))


def test_an_absent_selection_inherits_everything():
    assert PolicySelection.parse(None, "q") == PolicySelection()


@pytest.mark.parametrize(
    "value, message",
    [
        (
            {"orderin": "drf"},
            "scenario.policies: unknown policy kind orderin; use ordering, preemption, placement",
        ),
        ("drf", "scenario.policies: expected a map of ordering/preemption/placement, got 'drf'"),
        ({"ordering": 3}, "scenario.policies.ordering: expected a policy name or {name, params}"),
    ],
    ids=["misspelt-kind", "not-a-map", "bad-ref"],
)
def test_selection_rejects_other_shapes(value, message):
    with pytest.raises(UnknownPolicy) as err:
        PolicySelection.parse(value, "scenario.policies")
    assert str(err.value).startswith(message)


def test_selection_problems_lists_every_bad_choice():
    sel = PolicySelection(
        PolicyRef("nope"), PolicyRef("test-none"), PolicyRef("test-bin-pack", {"x": 1})
    )
    ordering, placement = sel.problems("spec.policies")
    assert ordering.startswith("spec.policies.ordering: no ordering policy named 'nope'; ")
    assert "test-fifo" in ordering and "drf" in ordering
    assert (
        placement == "spec.policies.placement: placement policy 'test-bin-pack' takes no parameters"
    )
