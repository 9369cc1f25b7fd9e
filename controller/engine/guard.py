"""One bad gang or one misbehaving plug-in must never stop an admission cycle.

Two layers:
- For the length of a cycle the engine's policies are guarded stand-ins. Each call into a
  plug-in is checked: an exception, or an answer that breaks the contract (a victim named
  twice, not admitted, or the gang itself; a node that is not eligible; a domain that was
  not offered), becomes a `PolicyFault` naming the policy. (A policy that offers nodes by
  the engine's own `BinPack.node_candidates` runs no plug-in code there: not wrapped.)
  An ordering policy that fails is not asked again in that cycle: the remaining pending
  gangs follow the built-in order (priority, then age, then uid), and the fault is
  reported in `CycleResult.faults`.
- Each gang is decided under `Guard.decide`: a request selector that does not compile, or
  whatever raises (a fault), leaves that one gang pending with the reason, after undoing
  exactly what its decision had applied (its admission, victims it evicted; pods placed
  by an unfinished placement attempt are released by the placer itself). Gangs admitted
  earlier in the cycle stay in the ledger to be committed or rolled back.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from controller.engine.cel import SelectorError, compile_selector
from controller.engine.errors import InvalidInput
from controller.engine.model import Gang, Topology
from controller.engine.placement import Domain
from controller.engine.policy import BinPack, node_order_is_local

if TYPE_CHECKING:
    from controller.engine.context import CycleContext
    from controller.engine.ledger import Ledger
    from controller.engine.placement import PodDemand
    from controller.engine.policy import OrderingPolicy, PlacementPolicy, PreemptionPolicy
    from controller.engine.state import ClusterState

P = ParamSpec("P")
T = TypeVar("T")

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60

_CACHE_LIMIT = 1024
"""Guarded stand-ins kept per engine; a plug-in that makes new policies on every call
gets its cache dropped rather than grown forever."""
_SELECTOR_MEMO_LIMIT = 1 << 16
"""Gangs whose selectors were checked; dropped wholesale when full (cheap to redo)."""


class PolicyFault(Exception):
    """A plug-in raised or broke its contract; the message names the policy."""

    def __init__(self, kind: str, policy: object, what: str) -> None:
        super().__init__(f"{kind} policy {policy_name(policy)!r} failed: {what}")
        self.kind = kind
        self.what = what


def policy_name(policy: object) -> str:
    name = getattr(policy, "name", None)
    return name if isinstance(name, str) else type(policy).__name__


def describe(exc: BaseException) -> str:
    """An exception as one line: a fault's own text, else its type and message."""
    if isinstance(exc, PolicyFault):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class HasPolicies(Protocol):
    ordering: OrderingPolicy
    preemption: PreemptionPolicy
    placement: PlacementPolicy


class SafeOrdering:
    """An ordering policy whose iteration is checked and, once it fails, replaced by the
    built-in order for the rest of the cycle."""

    def __init__(self, inner: OrderingPolicy, faults: list[str]) -> None:
        self.inner = inner
        self.name = policy_name(inner)
        self.faults = faults
        self.failed = False

    def order(self, ctx: CycleContext, queue: str | None = None) -> Iterator[Gang]:
        state = ctx.state
        seen: set[str] = set()
        problem: str | None = None
        try:
            items = iter(self.inner.order(ctx) if queue is None else self.inner.order(ctx, queue))
        except Exception as exc:
            items, problem = iter(()), f"order raised {describe(exc)}"
        while problem is None and not self.failed:
            try:
                item = next(items)
            except StopIteration:
                break
            except Exception as exc:
                problem = f"order raised {describe(exc)}"
                break
            problem = self._problem(item, seen, state)
            if problem is None:
                assert isinstance(item, Gang)
                seen.add(item.uid)
                yield state.pending.get(item.uid, item)
        if problem is not None:
            self.fail(problem)
        if self.failed:
            for gang in state.pending_in_order(queue):
                if gang.uid not in seen:
                    yield gang

    @staticmethod
    def _problem(item: object, seen: set[str], state: ClusterState) -> str | None:
        if not isinstance(item, Gang):
            return f"order yielded {_short.repr(item)}, which is not a Gang"
        if item.uid in seen:
            return f"order yielded gang {item.uid} twice"
        if item.uid not in state.pending and item.uid not in state.admitted:
            return f"order yielded gang {item.uid}, which is neither pending nor admitted"
        return None

    def observe(self, gang: Gang, admitted: bool) -> None:
        if self.failed:
            return
        try:
            self.inner.observe(gang, admitted)
        except Exception as exc:
            self.fail(f"observe raised {describe(exc)}")

    def fail(self, problem: str) -> None:
        """Record a fault of the ordering; the rest of the cycle takes the built-in order."""
        self.failed = True
        self.faults.append(
            f"ordering policy {self.name!r} failed: {problem}; the rest of this cycle "
            "follows the built-in order (priority, then age)"
        )


class SafePreemption:
    """A preemption policy whose answers are checked; any fault is a `PolicyFault`."""

    def __init__(self, inner: PreemptionPolicy) -> None:
        self.inner = inner
        self.name = policy_name(inner)

    def could_help(self, state: ClusterState, gang: Gang) -> bool:
        try:
            return bool(self.inner.could_help(state, gang))
        except Exception as exc:
            raise _fault("preemption", self.inner, "could_help", exc) from exc

    def victims(self, ctx: CycleContext, gang: Gang, reason: str) -> Sequence[str]:
        try:
            answer = self.inner.victims(ctx, gang, reason)
        except Exception as exc:
            raise _fault("preemption", self.inner, "victims", exc) from exc
        if isinstance(answer, str | bytes) or not isinstance(answer, Iterable):
            what = f"victims returned {_short.repr(answer)}, not a list of gang uids"
            raise PolicyFault("preemption", self.inner, what)
        try:
            named: list[object] = list(answer)
        except Exception as exc:
            raise _fault("preemption", self.inner, "victims", exc) from exc
        seen: set[str] = set()
        for uid in named:
            problem = _victim_problem(uid, gang, seen, ctx)
            if problem is not None:
                raise PolicyFault("preemption", self.inner, problem)
            assert isinstance(uid, str)
            seen.add(uid)
        return [uid for uid in named if isinstance(uid, str)]

    def retry_at(self, state: ClusterState, gang: Gang) -> float | None:
        retry = getattr(self.inner, "retry_at", None)
        if retry is None:
            return None
        try:
            until = retry(state, gang)
        except Exception as exc:
            raise _fault("preemption", self.inner, "retry_at", exc) from exc
        if until is None:
            return None
        if not isinstance(until, int | float) or isinstance(until, bool) or math.isnan(until):
            problem = f"retry_at returned {_short.repr(until)}, not a time"
            raise PolicyFault("preemption", self.inner, problem)
        return float(until)


def _victim_problem(uid: object, gang: Gang, seen: set[str], ctx: CycleContext) -> str | None:
    if not isinstance(uid, str):
        return f"named {_short.repr(uid)} as a victim, which is not a gang uid"
    if uid == gang.uid:
        return f"named the gang itself ({uid}) as a victim"
    if uid in seen:
        return f"named victim {uid} twice"
    if not ctx.is_admitted(uid):
        return f"named {uid} as a victim, which is not admitted"
    return None


class SafePlacement:
    """A placement policy whose answers are checked; any fault is a `PolicyFault`."""

    def __init__(self, inner: PlacementPolicy, guard: Guard) -> None:
        self.inner = inner
        self.name = policy_name(inner)
        self._guard = guard
        self.node_order_is_local = node_order_is_local(inner)
        offer = getattr(inner, "node_candidates", None)
        self._builtin_nodes = (
            getattr(offer, "__func__", None) is BinPack.node_candidates
            and getattr(offer, "__self__", None) is inner
        )
        """The inner policy offers nodes by the engine's own `BinPack.node_candidates`
        (`PodDemand.candidates`: eligible nodes only), so there is nothing to check."""

    def for_gang(self, gang: Gang) -> PlacementPolicy:
        try:
            policy = self.inner.for_gang(gang)
        except Exception as exc:
            raise _fault("placement", self.inner, "for_gang", exc) from exc
        return self if policy is self.inner else self._guard.placement(policy)

    def topology(self, gang: Gang) -> Topology | None:
        try:
            topo = self.inner.topology(gang)
        except Exception as exc:
            raise _fault("placement", self.inner, "topology", exc) from exc
        if topo is not None and not isinstance(topo, Topology):
            problem = f"topology returned {_short.repr(topo)}, not a Topology or None"
            raise PolicyFault("placement", self.inner, problem)
        return topo

    def node_candidates(
        self, state: ClusterState, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterator[str]:
        if self._builtin_nodes:
            return demand.candidates(state, eligible, False)
        return self._checked_nodes(
            "node_candidates",
            demand,
            eligible,
            lambda: self.inner.node_candidates(state, demand, eligible),
        )

    def retry_candidates(
        self, state: ClusterState, gang: Gang, demand: PodDemand, eligible: frozenset[str]
    ) -> Iterator[str]:
        """The inner policy's retry order if it has one, else most free first (as the
        placer does for an unguarded policy)."""
        retry = getattr(self.inner, "retry_candidates", None)
        if retry is None:
            return demand.candidates(state, eligible, True)
        return self._checked_nodes(
            "retry_candidates", demand, eligible, lambda: retry(state, gang, demand, eligible)
        )

    def _checked_nodes(
        self,
        method: str,
        demand: PodDemand,
        eligible: frozenset[str],
        produce: Callable[[], Iterable[str]],
    ) -> Iterator[str]:
        try:
            # Only the policy's code runs in here: the consumer's runs outside the
            # generator, and closing it early raises GeneratorExit, not an Exception.
            for node in produce():
                if not isinstance(node, str) or node not in eligible:
                    break
                yield node
            else:
                return
        except Exception as exc:
            raise _fault("placement", self.inner, method, exc) from exc
        problem = (
            f"{method} offered {_short.repr(node)}, which is not an eligible "
            f"node for pod set {demand.pod_set.name}"
        )
        raise PolicyFault("placement", self.inner, problem)

    def order_domains(self, gang: Gang, domains: list[Domain], pods_needed: int) -> list[Domain]:
        try:
            ordered = list(self.inner.order_domains(gang, domains, pods_needed))
        except Exception as exc:
            raise _fault("placement", self.inner, "order_domains", exc) from exc
        given = {id(d) for d in domains}  # an offered domain is within the offered nodes
        offered: frozenset[str] | None = None
        for d in ordered:
            if isinstance(d, Domain) and id(d) in given:
                continue
            if offered is None and isinstance(d, Domain):
                offered = frozenset().union(*(d.nodes for d in domains))
            if not isinstance(d, Domain) or offered is None or not d.nodes <= offered:
                problem = (
                    f"order_domains returned {_short.repr(d)}, which is not one of the "
                    "offered domains or a union of them"
                )
                raise PolicyFault("placement", self.inner, problem)
        return ordered


def _fault(kind: str, policy: object, method: str, exc: Exception) -> PolicyFault:
    if isinstance(exc, PolicyFault):
        return exc  # a fault of another policy it called (through ctx.fits): keep its name
    return PolicyFault(kind, policy, f"{method} raised {describe(exc)}")


def _selector_problem(gang: Gang) -> str | None:
    for ps in gang.pod_sets:
        for claim in ps.claims:
            for req in claim.spec.requests:
                for sub in req.alternatives:
                    name = f"{req.name}/{sub.name}" if req.first_available else req.name
                    for i, expr in enumerate(sub.selectors):
                        where = (
                            f"pod set {ps.name}: claim {claim.name}: request {name}: selectors[{i}]"
                        )
                        try:
                            compile_selector(expr, where=where)
                        except SelectorError as err:
                            return " ".join(str(err).split())
    return None


class Guard:
    """An engine's guarded stand-ins (kept, so plans built in one cycle stay valid in the
    next) and the per-gang decision guard."""

    def __init__(self) -> None:
        self._placements: dict[int, tuple[PlacementPolicy, SafePlacement]] = {}
        self._preemptions: dict[int, tuple[PreemptionPolicy, SafePreemption]] = {}
        self._selectors: dict[str, tuple[Gang, str | None]] = {}
        self._faults: list[str] | None = None
        """The running cycle's fault list (`guarding`)."""

    def selector_problem(self, gang: Gang) -> str | None:
        """Why a request selector of `gang` cannot be compiled, or None (remembered)."""
        hit = self._selectors.get(gang.uid)
        if hit is None or hit[0] is not gang:
            if len(self._selectors) >= _SELECTOR_MEMO_LIMIT:
                self._selectors.clear()
            hit = self._selectors[gang.uid] = (gang, _selector_problem(gang))
        return hit[1]

    def placement(self, inner: PlacementPolicy) -> SafePlacement:
        if isinstance(inner, SafePlacement):
            return inner
        hit = self._placements.get(id(inner))
        if hit is None or hit[0] is not inner:
            if len(self._placements) >= _CACHE_LIMIT:
                self._placements.clear()
            hit = self._placements[id(inner)] = (inner, SafePlacement(inner, self))
        return hit[1]

    def preemption(self, inner: PreemptionPolicy) -> SafePreemption:
        hit = self._preemptions.get(id(inner))
        if hit is None or hit[0] is not inner:
            self._preemptions.clear()
            hit = self._preemptions[id(inner)] = (inner, SafePreemption(inner))
        return hit[1]

    @contextmanager
    def guarding(self, engine: HasPolicies) -> Iterator[list[str]]:
        """Swap the engine's policies for guarded stand-ins while the block runs; yields the
        list that cycle-wide faults are reported in."""
        faults: list[str] = []
        ordering, preemption, placement = engine.ordering, engine.preemption, engine.placement
        engine.ordering = SafeOrdering(ordering, faults)
        engine.preemption = self.preemption(preemption)
        engine.placement = self.placement(placement)
        self._faults = faults
        try:
            yield faults
        finally:
            engine.ordering, engine.preemption, engine.placement = ordering, preemption, placement
            self._faults = None

    def decide(
        self,
        ledger: Ledger,
        gang: Gang,
        run: Callable[Concatenate[Gang, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T | str:
        """`run(gang, ...)`, or the reason the gang stays pending: a request selector that
        does not compile (checked first, once per gang), or whatever `run` raised, after
        what it had applied is undone (its admission rolled back, its victims restored). A
        plug-in's fault is the operator's to fix, not the gang's owner's: it is also
        reported in the cycle's faults, naming the gang."""
        problem = self.selector_problem(gang)
        if problem is not None:
            return problem
        mark = ledger.open_count()
        try:
            return run(gang, *args, **kwargs)
        except Exception as exc:
            for uid in reversed(ledger.opened_since(mark)):
                if ledger.is_open(uid):
                    ledger.rollback(uid)
            ledger.restore_loose()
            reason = str(exc) if isinstance(exc, PolicyFault | InvalidInput) else describe(exc)
            if not isinstance(exc, PolicyFault | InvalidInput):
                reason = f"could not be decided: {reason}"
            reason = " ".join(reason.split())  # one line (CEL parse errors span several)
            if isinstance(exc, PolicyFault) and self._faults is not None:
                self._faults.append(f"deciding gang {gang.uid}: {reason}")
            return reason
