"""Plug-ins that misbehave on purpose: real policies wrapped so that, from a drawn call on,
they raise or break their contract in one of the ways `strategies.FAULTS` names."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from controller.engine.context import CycleContext
from controller.engine.cycle import Engine
from controller.engine.model import Gang, PodSet, Topology
from controller.engine.placement import Domain, PodDemand
from controller.engine.policy import OrderingPolicy, PlacementPolicy, PreemptionPolicy
from controller.engine.state import ClusterState
from tests.property.strategies import FaultPlan


class InjectedFault(RuntimeError):
    pass


@dataclass
class Trigger:
    """Counts calls; says when the plan's fault is due."""

    plan: FaultPlan
    calls: int = 0

    def due(self, fault: str) -> bool:
        if self.plan.fault != fault:
            return False
        self.calls += 1
        return self.calls == self.plan.at or (not self.plan.once and self.calls > self.plan.at)


@dataclass
class FaultyOrdering:
    inner: OrderingPolicy
    trigger: Trigger
    name: str = "test-faulty-ordering"

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[object]:
        for gang in self.inner.order(ctx, queue):
            t = self.trigger
            if t.due("raise"):
                raise InjectedFault("order")
            if t.due("not-gang"):
                yield gang.uid
            if t.due("unknown-gang"):
                yield replace(gang, uid=f"ghost-{gang.uid}")
            yield gang
            if t.due("duplicate"):
                yield gang

    def observe(self, gang: Gang, admitted: bool) -> None:
        if self.trigger.due("observe"):
            raise InjectedFault("observe")
        self.inner.observe(gang, admitted)


@dataclass
class FaultyPreemption:
    inner: PreemptionPolicy
    trigger: Trigger
    name: str = "test-faulty-preemption"

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        if self.trigger.due("could-help"):
            raise InjectedFault("could_help")
        return self.inner.could_help(state, gang)

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[object]:
        named: list[object] = list(self.inner.victims(ctx, gang, reason))
        t = self.trigger
        if t.due("raise"):
            raise InjectedFault("victims")
        some = named[:1] or sorted(ctx.state.admitted)[:1]
        if t.due("duplicate"):
            named += some * 2
        if t.due("self"):
            named.append(gang.uid)
        if t.due("not-admitted"):
            named.append("ghost")
        if t.due("non-string"):
            named.append(3)
        return named


@dataclass
class FaultyPlacement:
    inner: PlacementPolicy
    trigger: Trigger
    name: str = "test-faulty-placement"
    _routed: dict[int, FaultyPlacement] = field(default_factory=dict)

    def for_gang(self, gang: Gang) -> PlacementPolicy:
        inner = self.inner.for_gang(gang)
        if inner is self.inner:
            return self
        hit = self._routed.get(id(inner))
        if hit is None or hit.inner is not inner:
            hit = self._routed[id(inner)] = FaultyPlacement(inner, self.trigger)
        return hit

    def topology(self, gang: Gang) -> Topology | None:
        if self.trigger.due("topology"):
            raise InjectedFault("topology")
        return self.inner.topology(gang)

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterable[str]:
        t = self.trigger
        for node in self.inner.node_candidates(state, demand, eligible):
            if t.due("raise"):
                raise InjectedFault("node_candidates")
            if t.due("unknown-node"):
                yield "ghost-node"
            if t.due("ineligible-node"):
                outside = sorted(set(state.nodes) - eligible)
                yield outside[0] if outside else "ghost-node"
            yield node

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        ordered = self.inner.order_domains(gang, domains, pods_needed)
        if self.trigger.due("foreign-domain"):
            return [Domain("foreign", frozenset({"ghost-node"}), 1 << 20), *ordered]
        return ordered


def make_faulty(engine: Engine, plan: FaultPlan) -> Trigger:
    """Wrap the engine's policy of the plan's kind; returns the trigger counting calls."""
    trigger = Trigger(plan)
    if plan.kind == "ordering":
        engine.ordering = FaultyOrdering(engine.ordering, trigger)  # type: ignore[assignment]
    elif plan.kind == "preemption":
        engine.preemption = FaultyPreemption(engine.preemption, trigger)  # type: ignore[assignment]
    else:
        engine.placement = FaultyPlacement(engine.placement, trigger)
    return trigger


def is_bad(gang: Gang) -> bool:
    """Built by `strategies.bad_gangs`: a claim named `bad` in its first pod set."""
    first: PodSet = gang.pod_sets[0]
    return any(c.name == "bad" for c in first.claims)
