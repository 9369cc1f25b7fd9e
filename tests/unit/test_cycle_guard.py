"""One bad gang or one misbehaving plug-in leaves that gang pending with the reason; the
cycle goes on, the state stays consistent and the ledger can still commit or roll back."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest

from controller.engine.context import CycleContext
from controller.engine.cycle import CycleResult, Engine, Outcome
from controller.engine.errors import InvalidInput
from controller.engine.ledger import Ledger
from controller.engine.model import Gang, Queue, Topology, TopologyMode
from controller.engine.placement import Domain, Placer, PodDemand
from controller.engine.policy import BinPack, FifoWithinPriority
from controller.engine.state import ClusterState
from tests.builders import cluster, gang, gpu_claim, node, pod_set
from tests.property.harness import Snapshot

BAD_CEL = 'device.attributes["gpu.example.com"].model =='


def outcome(result: CycleResult, uid: str) -> tuple[Outcome, str]:
    [decision] = [d for d in result.decisions if d.gang_uid == uid]
    return decision.outcome, decision.reason


def admitted(result: CycleResult) -> list[str]:
    return [d.gang_uid for d in result.admitted]


# ---- bad gangs ----------------------------------------------------------------------------


def test_a_request_selector_that_does_not_compile_leaves_only_that_gang_pending():
    state = cluster(nodes=1)
    bad = gang("bad", pod_sets=(pod_set(1, claims=(gpu_claim(1, (BAD_CEL,)),)),), created=0)
    state.add_gang(bad)
    state.add_gang(gang("ok", gpus=2, created=1))
    result = Engine(state).cycle(now=0)
    kind, reason = outcome(result, "bad")
    assert kind is Outcome.PENDING
    assert reason.startswith(
        "pod set worker: claim gpu: request gpus: selectors[0]: CEL expression does not compile"
    )
    assert "\n" not in reason
    assert admitted(result) == ["ok"]
    assert state.violations() == []


# ---- preemption plug-ins ----------------------------------------------------------------


@dataclass
class NamesVictims:
    """A preemption plug-in that answers whatever it was given (or raises it)."""

    answer: Callable[[CycleContext, Gang], object]
    name: str = "test-faulty"

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        return True

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        return self.answer(ctx, gang)  # type: ignore[return-value]


def raise_boom(ctx: CycleContext, gang: Gang) -> object:
    raise RuntimeError("boom")


def preempting(answer: Callable[[CycleContext, Gang], object]) -> tuple[Engine, Snapshot]:
    """One node full with `victim`; `boss` needs it all, `small` (another queue) fits."""
    state = cluster(nodes=1, gpus_per_node=8, queues=(Queue("team-a"), Queue("team-b")))
    engine = Engine(state, preemption=NamesVictims(answer))
    state.add_gang(gang("victim", gpus=7))
    engine.cycle(now=0).ledger.commit_all()
    state.add_gang(gang("boss", gpus=8, priority=10))
    state.add_gang(gang("small", gpus=1, queue="team-b"))
    return engine, Snapshot.of(state)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (lambda ctx, g: ["victim", "victim"], "named victim victim twice"),
        (lambda ctx, g: ["small"], "named small as a victim, which is not admitted"),
        (lambda ctx, g: ["ghost"], "named ghost as a victim, which is not admitted"),
        (lambda ctx, g: [g.uid], "named the gang itself (boss) as a victim"),
        (lambda ctx, g: [7], "named 7 as a victim, which is not a gang uid"),
        (lambda ctx, g: "victim", "victims returned 'victim', not a list of gang uids"),
        (lambda ctx, g: None, "victims returned None, not a list of gang uids"),
        (raise_boom, "victims raised RuntimeError: boom"),
    ],
)
def test_a_faulty_preemption_plug_in_leaves_only_that_gang_pending(answer, problem):
    engine, _ = preempting(answer)
    result = engine.cycle(now=1)
    kind, reason = outcome(result, "boss")
    assert kind is Outcome.PENDING
    assert reason == f"preemption policy 'test-faulty' failed: {problem}"
    assert admitted(result) == ["small"]
    assert "victim" in engine.state.admitted
    assert engine.state.violations() == []


def test_a_faulty_preemption_plug_in_is_also_reported_to_the_operator_naming_the_gang():
    engine, _ = preempting(raise_boom)
    result = engine.cycle(now=1)
    assert result.faults == [
        "deciding gang boss: preemption policy 'test-faulty' failed: victims raised "
        "RuntimeError: boom"
    ]


def test_a_gang_that_is_itself_bad_is_not_reported_as_a_plug_in_fault():
    state = cluster(nodes=1)
    state.add_gang(
        gang("bad", pod_sets=(pod_set(1, claims=(gpu_claim(1, (BAD_CEL,)),)),), created=0)
    )
    result = Engine(state).cycle(now=0)
    assert outcome(result, "bad")[0] is Outcome.PENDING
    assert result.faults == []


def test_a_preemption_plug_in_raising_in_could_help_is_reported_on_the_gang():
    engine, _ = preempting(lambda ctx, g: ["victim"])
    engine.preemption.could_help = lambda state, g: 1 / 0  # type: ignore[method-assign]
    kind, reason = outcome(engine.cycle(now=1), "boss")
    assert kind is Outcome.PENDING
    assert reason == (
        "preemption policy 'test-faulty' failed: could_help raised ZeroDivisionError: "
        "division by zero"
    )


def test_rolling_back_a_cycle_with_a_faulty_plug_in_restores_the_state_exactly():
    engine, before = preempting(lambda ctx, g: ["victim", "victim"])
    result = engine.cycle(now=1)
    result.ledger.rollback_all()
    assert Snapshot.of(engine.state).diff(before) == []


# ---- placement plug-ins -----------------------------------------------------------------


@dataclass
class FaultyPlacement(BinPack):
    """Bin-pack, except for pod sets named `target`: `fault(call)` on every call."""

    target: str = "boss"
    fault: Callable[[int], Iterator[str] | None] = lambda call: None
    calls: int = 0
    name: str = "test-faulty"  # type: ignore[misc]

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterator[str]:
        if demand.pod_set.name == self.target:
            self.calls += 1
            bad = self.fault(self.calls)
            if bad is not None:
                return bad
        return super().node_candidates(state, demand, eligible)


def fail_from(call: int) -> Callable[[int], Iterator[str] | None]:
    def fault(n: int) -> Iterator[str] | None:
        if n >= call:
            raise RuntimeError(f"boom at call {n}")
        return None

    return fault


def test_a_placement_plug_in_raising_mid_gang_leaves_nothing_of_that_gang():
    state = cluster(nodes=2)
    policy = FaultyPlacement(fault=fail_from(3))
    state.add_gang(gang("boss", pod_sets=(pod_set(4, gpus=1, name="boss"),)))
    before = Snapshot.of(state)
    result = Engine(state, placement=policy).cycle(now=0)
    kind, reason = outcome(result, "boss")
    assert kind is Outcome.PENDING
    assert reason == (
        "placement policy 'test-faulty' failed: node_candidates raised RuntimeError: boom at call 3"
    )
    assert Snapshot.of(state).diff(before) == []
    assert state.violations() == []


@pytest.mark.parametrize(
    ("nodes", "problem"),
    [
        (["nowhere"], "node_candidates offered 'nowhere', which is not an eligible node"),
        ([None], "node_candidates offered None, which is not an eligible node"),
    ],
)
def test_a_placement_plug_in_offering_unknown_nodes_leaves_that_gang_pending(nodes, problem):
    state = cluster(nodes=2)
    policy = FaultyPlacement(fault=lambda call: iter(nodes))
    state.add_gang(gang("boss", pod_sets=(pod_set(2, gpus=1, name="boss"),)))
    state.add_gang(gang("ok", gpus=1, created=1))
    result = Engine(state, placement=policy).cycle(now=0)
    kind, reason = outcome(result, "boss")
    assert kind is Outcome.PENDING
    assert reason.startswith(f"placement policy 'test-faulty' failed: {problem}")
    assert admitted(result) == ["ok"]


def test_a_placement_plug_in_offering_a_node_the_pod_may_not_use_is_refused():
    state = cluster(nodes=2)
    state.upsert_node(node("n0", zone="a"))
    ps = pod_set(1, gpus=1, name="boss", node_selector={"zone": "a"})
    policy = FaultyPlacement(fault=lambda call: iter(["n1"]))
    state.add_gang(gang("boss", pod_sets=(ps,)))
    kind, reason = outcome(Engine(state, placement=policy).cycle(now=0), "boss")
    assert kind is Outcome.PENDING
    assert "offered 'n1', which is not an eligible node for pod set boss" in reason
    assert state.violations() == []


@dataclass
class DomainAnswer(BinPack):
    """Bin-pack whose domain order is `answer(offered domains)`."""

    answer: Callable[[list[Domain]], list[object]] = list
    name: str = "test-domains"  # type: ignore[misc]

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        return self.answer(domains)  # type: ignore[return-value]


def zoned_cluster() -> ClusterState:
    """Nodes n0, n1 in zone a and n2 in zone b, with a gang needing one zone's 16 GPUs."""
    state = cluster(nodes=3)
    for name, zone in (("n0", "a"), ("n1", "a"), ("n2", "b")):
        state.upsert_node(node(name, zone=zone))
    zone = Topology("zone", TopologyMode.REQUIRED)
    state.add_gang(gang("boss", pods=2, gpus=8, topology=zone))
    return state


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (
            lambda offered: [Domain("c", frozenset({"n9"}), 2)],
            "order_domains returned Domain(value='c'",
        ),
        (lambda offered: ["a"], "order_domains returned 'a', which is not one of the offered"),
    ],
)
def test_a_placement_plug_in_answering_a_domain_it_was_not_offered_is_refused(answer, problem):
    state = zoned_cluster()
    policy = DomainAnswer(answer=answer)
    kind, reason = outcome(Engine(state, placement=policy).cycle(now=0), "boss")
    assert kind is Outcome.PENDING
    assert reason.startswith(f"placement policy 'test-domains' failed: {problem}")
    assert "which is not one of the offered domains or a union of them" in reason


def test_a_placement_plug_in_may_answer_a_union_of_offered_domains():
    state = zoned_cluster()

    def union(offered: list[Domain]) -> list[object]:
        nodes = frozenset().union(*(d.nodes for d in offered))
        return [Domain("a+b", nodes, sum(d.pods_fitting for d in offered))]

    kind, _ = outcome(Engine(state, placement=DomainAnswer(answer=union)).cycle(now=0), "boss")
    assert kind is Outcome.ADMITTED


def test_victims_evicted_for_a_gang_whose_placement_then_fails_are_restored():
    state = cluster(nodes=1, gpus_per_node=8)
    engine = Engine(
        state,
        preemption=NamesVictims(lambda ctx, g: ["victim"]),
        placement=FaultyPlacement(fault=fail_from(1)),
    )
    state.add_gang(gang("victim", gpus=8))
    engine.cycle(now=0).ledger.commit_all()
    held = state.admitted["victim"]
    state.add_gang(gang("boss", pod_sets=(pod_set(1, gpus=8, name="boss"),), priority=10))
    before = Snapshot.of(state)
    result = engine.cycle(now=1)
    kind, reason = outcome(result, "boss")
    assert kind is Outcome.PENDING
    assert reason.startswith("placement policy 'test-faulty' failed: node_candidates raised")
    assert state.admitted["victim"] == held
    assert result.ledger.open_uids() == [] and result.ledger.evicted == set()
    assert Snapshot.of(state).diff(before) == []


# ---- ordering plug-ins ------------------------------------------------------------------


@dataclass
class FaultyOrdering:
    """Yields the built-in order with `mess(ctx, gangs)` applied."""

    mess: Callable[[CycleContext, list[Gang]], Iterator[object]]
    name: str = "test-faulty"

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[object]:
        return self.mess(ctx, list(FifoWithinPriority().order(ctx, queue)))

    def observe(self, gang: Gang, admitted: bool) -> None:
        return None


def first_then(extra: object) -> Callable[[CycleContext, list[Gang]], Iterator[object]]:
    def mess(ctx: CycleContext, gangs: list[Gang]) -> Iterator[object]:
        yield gangs[0]
        if isinstance(extra, Exception):
            raise extra
        yield extra(gangs) if callable(extra) else extra

    return mess


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("g2", "order yielded 'g2', which is not a Gang"),
        (lambda gangs: gangs[0], "order yielded gang g0 twice"),
        (gang("ghost"), "order yielded gang ghost, which is neither pending nor admitted"),
        (RuntimeError("lost my place"), "order raised RuntimeError: lost my place"),
    ],
)
def test_a_faulty_ordering_plug_in_falls_back_to_the_built_in_order(extra, problem):
    state = cluster(nodes=1)
    for i in range(3):
        state.add_gang(gang(f"g{i}", gpus=1, created=i))
    engine = Engine(state, ordering=FaultyOrdering(first_then(extra)))
    result = engine.cycle(now=0)
    assert admitted(result) == ["g0", "g1", "g2"]
    assert result.faults == [
        f"ordering policy 'test-faulty' failed: {problem}; the rest of this cycle follows the "
        "built-in order (priority, then age)"
    ]
    assert type(engine.ordering) is FaultyOrdering


def test_an_ordering_plug_in_raising_in_observe_falls_back_to_the_built_in_order():
    state = cluster(nodes=1)
    for i in range(3):
        state.add_gang(gang(f"g{i}", gpus=1, created=i))
    ordering = FaultyOrdering(lambda ctx, gangs: iter(reversed(gangs)))
    ordering.observe = lambda g, ok: 1 / 0  # type: ignore[method-assign,assignment]
    result = Engine(state, ordering=ordering).cycle(now=0)
    assert admitted(result) == ["g2", "g0", "g1"]
    assert result.faults[0].startswith(
        "ordering policy 'test-faulty' failed: observe raised ZeroDivisionError"
    )


def test_a_failed_cycle_still_leaves_earlier_admissions_to_commit():
    state = cluster(nodes=1)
    state.add_gang(gang("early", gpus=1, created=0))
    bad = gang("bad", pod_sets=(pod_set(1, claims=(gpu_claim(1, (BAD_CEL,)),)),), created=1)
    state.add_gang(bad)
    result = Engine(state).cycle(now=0)
    assert result.ledger.open_uids() == ["early"]
    assert [r.gang_uid for r in result.ledger.commit_all()] == ["early"]
    assert state.violations() == []


# ---- what the guard relies on ------------------------------------------------------------


def test_evicting_a_list_with_an_unknown_gang_changes_nothing():
    state = cluster(nodes=1)
    state.add_gang(gang("a", gpus=1))
    Engine(state).cycle(now=0).ledger.commit_all()
    before = Snapshot.of(state)
    with pytest.raises(InvalidInput, match="victims must be distinct admitted gangs"):
        Ledger(state).evict(["a", "ghost"])
    with pytest.raises(InvalidInput, match="victims must be distinct admitted gangs"):
        Ledger(state).evict(["a", "a"])
    assert Snapshot.of(state).diff(before) == []


def test_fits_without_a_gang_that_is_not_admitted_changes_nothing():
    state = cluster(nodes=1)
    state.add_gang(gang("a", gpus=1))
    engine = Engine(state)
    engine.cycle(now=0).ledger.commit_all()
    state.add_gang(gang("b", gpus=8))
    before = Snapshot.of(state)
    placer = Placer(state, engine.placement, engine.search_bound)
    ctx = CycleContext(state, Ledger(state), placer, engine.plan)
    with pytest.raises(InvalidInput, match="'ghost' is not an admitted gang"):
        ctx.fits(state.pending["b"], ["a", "ghost"])
    assert Snapshot.of(state).diff(before) == []


class KeyRaises(FifoWithinPriority):
    """A sorting plug-in whose static key fails on one gang."""

    def static_key(self, gang: Gang) -> tuple[int, float]:
        if gang.uid == "g0299":
            raise RuntimeError("no key for g0299")
        return (-gang.priority, gang.created)


def lazy_backlog() -> ClusterState:
    """300 one-GPU gangs for one 8-GPU node: enough for the cycle's lazy walk."""
    state = cluster(nodes=1)
    for i in range(300):
        state.add_gang(gang(f"g{i:04d}", gpus=1, created=i))
    return state


def test_a_static_key_that_raises_falls_back_to_the_policys_order_and_is_reported():
    state = lazy_backlog()
    result = Engine(state, ordering=KeyRaises()).cycle(now=0)
    assert admitted(result) == [f"g{i:04d}" for i in range(8)]
    (fault,) = result.faults
    assert fault.startswith(
        "ordering policy 'fifo' failed: static_key raised RuntimeError: no key for g0299 "
        "for gang g0299;"
    )
    assert state.violations() == []


class ForGangRaises(BinPack):
    """A placement plug-in that cannot say which policy places one gang."""

    name = "for-gang-raises"

    def for_gang(self, gang: Gang) -> BinPack:
        if gang.uid == "g0299":
            raise RuntimeError("no policy for g0299")
        return self


def test_a_placement_fault_in_the_lazy_walk_is_reported_as_that_plug_ins_not_static_keys():
    state = lazy_backlog()
    result = Engine(state, placement=ForGangRaises()).cycle(now=0)
    assert admitted(result) == [f"g{i:04d}" for i in range(8)]
    walk_fault = next(f for f in result.faults if f.startswith("lazy walk"))
    assert "placement policy 'for-gang-raises' failed: for_gang raised RuntimeError" in walk_fault
    assert "static_key" not in " ".join(result.faults)
    assert outcome(result, "g0299") == (
        Outcome.PENDING,
        "placement policy 'for-gang-raises' failed: "
        "for_gang raised RuntimeError: no policy for g0299",
    )
    assert state.violations() == []
