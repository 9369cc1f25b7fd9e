"""DRA devices for one pod on one node: every claim, request and firstAvailable alternative.

Complete for what it models: like kube-scheduler's structured allocator it backtracks over
requests (of all the pod's claims), their alternatives in order, and devices. It stays
cheap by symmetry: devices nothing can tell apart (the same match sets among the gang's
requests, the same typed values of every constrained attribute, the same shareability,
the same reach: node-local or network-attached) form one class, and the search chooses
how many devices each class gives, never which ones. Counting bounds cut branches that
cannot be completed, and a step budget bounds the rest; running out is reported, so a
refusal says whether it is proven.

Quota enters as a budget of devices per DeviceClass: an alternative whose class the
queue has no room for is skipped, so `firstAvailable` falls through to one it can pay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from controller.engine.devices import DeviceInventory, MatchKey
from controller.engine.model import (
    AllocationMode,
    DeviceKey,
    DeviceRequest,
    DeviceSubRequest,
    PodClaim,
    attribute_identity,
)
from controller.engine.reservation import ClaimAllocation, DeviceAllocation

DeviceFilter = Callable[[DeviceKey], bool]
DEVICE_SEARCH_STEPS = 2048
"""Bound on the choices one pod's device search on one node may try."""


def _any_device(_: DeviceKey) -> bool:
    return True


def match_key(sub: DeviceSubRequest) -> MatchKey:
    return (sub.device_class, sub.selectors)


def is_simple(claims: Sequence[PodClaim]) -> bool:
    """One claim with one ExactCount request and no constraint: first fit is complete."""
    if len(claims) != 1:
        return False
    spec = claims[0].spec
    return (
        len(spec.requests) == 1
        and not spec.constraints
        and len(spec.requests[0].alternatives) == 1
        and spec.requests[0].alternatives[0].mode is AllocationMode.EXACT_COUNT
    )


class _OutOfSteps(Exception):
    pass


@dataclass(slots=True)
class _Class:
    """Interchangeable usable devices; `used` of them are taken by the pod being solved."""

    devices: list[DeviceKey]
    members: frozenset[MatchKey]
    values: tuple[tuple[str, object] | None, ...]
    shareable: bool
    network: bool
    """Reachable from every node: other pods of the gang may want it, local ones not."""
    used: int = 0

    @property
    def free(self) -> int:
        return len(self.devices) - self.used


@dataclass(frozen=True, slots=True)
class _Request:
    claim: int
    request: DeviceRequest
    slots: tuple[tuple[int, int], ...]
    """(binding slot, attribute index) of each matchAttribute constraint covering it."""


class DeviceSearch:
    """Allocates devices to pods of one gang attempt; reads the inventory, never writes.

    `keys` and `attributes` are every match key and constrained attribute of the gang, so
    that a choice for one pod keeps apart devices that matter to another. `budget` maps a
    DeviceClass to the devices the gang may still take of it (absent: unlimited); the
    caller lowers it as pods are applied.
    """

    def __init__(
        self,
        inv: DeviceInventory,
        keys: Sequence[MatchKey] = (),
        attributes: Sequence[str] = (),
        device_ok: DeviceFilter | None = None,
        budget: Mapping[str, int] | None = None,
        steps: int = DEVICE_SEARCH_STEPS,
    ) -> None:
        self.inv = inv
        self.keys = tuple(keys)
        self.attributes = tuple(attributes)
        self.device_ok = device_ok or _any_device
        self.budget: dict[str, int] = dict(budget or {})
        self.steps = steps
        self.exhausted: str | None = None
        """Set when a search stopped at its step budget (the last such node)."""
        self.first_fit_ok = len(self.keys) <= 1 and not self.attributes
        """Nothing another pod of the gang wants sets devices apart: `first_fit` is
        complete for a simple claim (`is_simple`)."""

    def allocate(self, node: str, claims: Sequence[PodClaim]) -> tuple[ClaimAllocation, ...] | None:
        """The first allocation in preference order, or None if there is none."""
        if self.first_fit_ok and is_simple(claims):
            return self.first_fit(node, claims[0])
        return next(self.allocations(node, claims), None)

    def allocations(
        self, node: str, claims: Sequence[PodClaim]
    ) -> Iterator[tuple[ClaimAllocation, ...]]:
        """Every allocation up to interchangeable devices, preferred first."""
        if not claims:
            yield ()
            return
        pod = _PodSearch(self, node, claims)
        try:
            yield from pod.solutions()
        except _OutOfSteps:
            self.exhausted = f"device search budget of {self.steps} steps exhausted on node {node}"

    def charge(self, claims: Sequence[ClaimAllocation], sign: int) -> None:
        """Lower (sign -1) or restore (+1) the budget by what a pod holds."""
        budget = self.budget
        if not budget:
            return
        for claim in claims:
            for da in claim.devices:
                if da.device_class in budget:
                    budget[da.device_class] += sign

    def first_fit(self, node: str, claim: PodClaim) -> tuple[ClaimAllocation, ...] | None:
        """`allocate` for a simple claim (`is_simple`) when `first_fit_ok`: the first free
        matching devices the filter allows, the node's own before network-attached ones."""
        req = claim.spec.requests[0]
        sub = req.alternatives[0]
        count = sub.count
        cls = sub.device_class
        if count > self.budget.get(cls, count):
            return None
        inv = self.inv
        ms = inv.match_set(match_key(sub))
        free = ms.free
        if free.get(node, 0) + free.get(None, 0) < count:
            return None  # the free counts bound what the scan below can find
        ok = self.device_ok
        by_node = ms.by_node
        picks: list[DeviceAllocation] = []
        if not ms.shareable and ok is _any_device:
            # No member is shareable, so each is published and free exactly when nobody
            # holds it: the loop below with its lookups taken out.
            owners = inv.owners
            given = _given(req.name, cls)
            local = by_node.get(node, ())
            if len(local) == free.get(node, 0) >= count:  # all free: its first ones
                for dk in local[:count]:
                    da = given.get(dk)
                    if da is None:
                        da = given[dk] = DeviceAllocation(req.name, dk, cls, False)
                    picks.append(da)
                return (ClaimAllocation(claim.name, tuple(picks)),)
            for pool in (local, by_node.get(None, ())):
                for dk in pool:
                    if not owners.get(dk):
                        da = given.get(dk)
                        if da is None:
                            da = given[dk] = DeviceAllocation(req.name, dk, cls, False)
                        picks.append(da)
                        if len(picks) == count:
                            return (ClaimAllocation(claim.name, tuple(picks)),)
            return None
        for pool in (by_node.get(node, ()), by_node.get(None, ())):
            for dk in pool:
                if inv.is_free(dk) and ok(dk):
                    picks.append(DeviceAllocation(req.name, dk, cls, inv.is_shareable(dk)))
                    if len(picks) == count:
                        return (ClaimAllocation(claim.name, tuple(picks)),)
        return None


_GIVEN_LIMIT = 1 << 16
"""Interned unshared `DeviceAllocation`s kept per (request, class), and (request, class)
pairs kept: a table past its bound is dropped wholesale (cheap to build again)."""
_given_by: dict[tuple[str, str], dict[DeviceKey, DeviceAllocation]] = {}


def _given(request: str, device_class: str) -> dict[DeviceKey, DeviceAllocation]:
    """Unshared allocations to `request` of `device_class`, one object per device: a
    frozen value that first fit hands out again and again, built once."""
    hit = _given_by.get((request, device_class))
    if hit is None or len(hit) > _GIVEN_LIMIT:
        if len(_given_by) > _GIVEN_LIMIT:
            _given_by.clear()
        hit = _given_by[(request, device_class)] = {}
    return hit


class _PodSearch:
    """One pod's backtracking search on one node (own counters, so searches can nest)."""

    def __init__(self, owner: DeviceSearch, node: str, claims: Sequence[PodClaim]) -> None:
        self.owner = owner
        self.node = node
        self.claims = claims
        self.steps = owner.steps
        self.room = dict(owner.budget)
        inv = owner.inv
        attributes = list(owner.attributes)
        keys = set(owner.keys)
        requests: list[_Request] = []
        slot = 0
        for ci, claim in enumerate(claims):
            spec = claim.spec
            covers: dict[str, list[tuple[int, int]]] = {r.name: [] for r in spec.requests}
            for c in spec.constraints:
                if c.attribute not in attributes:
                    attributes.append(c.attribute)
                for name in c.requests or tuple(covers):
                    covers[name].append((slot, attributes.index(c.attribute)))
                slot += 1
            for r in spec.requests:
                keys.update(match_key(s) for s in r.alternatives)
                requests.append(_Request(ci, r, tuple(covers[r.name])))
        self.requests = requests
        self.bound: list[tuple[str, object] | None] = [None] * slot
        self.classes = self._classes(inv, keys, attributes)
        self.matching: dict[MatchKey, int] = {}
        for k in keys:
            ms = inv.match_set(k)
            self.matching[k] = len(ms.by_node.get(node, ())) + len(ms.by_node.get(None, ()))
        self.picks: list[tuple[DeviceSubRequest, list[tuple[_Class, int, int]]]] = []

    def _classes(
        self, inv: DeviceInventory, keys: set[MatchKey], attributes: list[str]
    ) -> list[_Class]:
        own = {match_key(s) for r in self.requests for s in r.request.alternatives}
        seen: set[DeviceKey] = set()
        ok = self.owner.device_ok
        groups: dict[tuple[object, ...], _Class] = {}
        for k in keys:
            inv.match_set(k)  # built now, so memberships below are complete
        for k in sorted(own):
            ms = inv.match_set(k)
            pools = ((False, ms.by_node.get(self.node, ())), (True, ms.by_node.get(None, ())))
            for network, pool in pools:
                for dk in pool:
                    if dk in seen:
                        continue
                    seen.add(dk)
                    if not inv.is_free(dk) or not ok(dk):
                        continue
                    attrs = inv.devices[dk].attributes
                    members = inv.memberships(dk) & keys
                    values = tuple(
                        attribute_identity(attrs[a]) if a in attrs else None for a in attributes
                    )
                    shareable = inv.is_shareable(dk)
                    sig = (members, values, shareable, network)
                    cls = groups.get(sig)
                    if cls is None:
                        cls = groups[sig] = _Class([], members, values, shareable, network)
                    cls.devices.append(dk)
        out = list(groups.values())
        for cls in out:
            cls.devices.sort()
        # Devices fewer requests can use first, so versatile ones stay for later requests;
        # then node-local before network-attached ones, which pods on other nodes could use.
        out.sort(key=lambda c: (len(c.members), c.network, c.devices[0]))
        return out

    # ---- search ----------------------------------------------------------------------
    def solutions(self) -> Iterator[tuple[ClaimAllocation, ...]]:
        for _ in self._solve(0):
            yield self._allocation()

    def _step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise _OutOfSteps

    def _solve(self, i: int) -> Iterator[None]:
        if i == len(self.requests):
            yield None
            return
        if not self._completable(i):
            return
        req = self.requests[i]
        room = self.room
        for sub in req.request.alternatives:
            mk = match_key(sub)
            for takes, count in self._choices(req, sub, mk):
                self._step()
                cls_name = sub.device_class
                if cls_name in room and room[cls_name] < count:
                    break
                saved = self._bind(req, takes)
                if cls_name in room:
                    room[cls_name] -= count
                placed = [(cls, cls.used, k) for cls, k in takes]
                for cls, k in takes:
                    cls.used += k
                self.picks.append((sub, placed))
                yield from self._solve(i + 1)
                self.picks.pop()
                for cls, k in takes:
                    cls.used -= k
                if cls_name in room:
                    room[cls_name] += count
                self._unbind(req, saved)

    def _completable(self, i: int) -> bool:
        """A counting bound: every remaining request has an alternative with enough free
        matching devices and budget, and together their smallest needs fit in what is free."""
        total_free = sum(c.free for c in self.classes)
        need = 0
        for req in self.requests[i:]:
            least: int | None = None
            for sub in req.request.alternatives:
                mk = match_key(sub)
                free = sum(c.free for c in self.classes if mk in c.members)
                n = free if sub.mode is AllocationMode.ALL else sub.count
                if n == 0 or n > free:
                    continue
                if n > self.room.get(sub.device_class, n):
                    continue
                least = n if least is None else min(least, n)
            if least is None:
                return False
            need += least
        return need <= total_free

    def _choices(
        self, req: _Request, sub: DeviceSubRequest, mk: MatchKey
    ) -> Iterator[tuple[list[tuple[_Class, int]], int]]:
        """Ways to satisfy `sub` from the free classes: (class, how many) lists."""
        eligible = [c for c in self.classes if mk in c.members and c.free > 0]
        if sub.mode is AllocationMode.ALL:
            members = [c for c in self.classes if mk in c.members]
            total = sum(len(c.devices) for c in members)
            if not total or total != self.matching.get(mk, 0) or any(c.used for c in members):
                return
            if all(self._compatible(c, req.slots) for c in members) and self._agree(
                members, req.slots
            ):
                yield [(c, len(c.devices)) for c in members], total
            return
        n = sub.count
        groups: dict[tuple[object, ...], list[_Class]] = {}
        for c in eligible:
            if self._compatible(c, req.slots):
                groups.setdefault(tuple(c.values[a] for _, a in req.slots), []).append(c)
        ordered = sorted(
            groups.values(),
            key=lambda g: (-sum(c.free for c in g), g[0].devices[0]),
        )
        for group in ordered:
            if sum(c.free for c in group) < n:
                continue
            for spread in _spreads([c.free for c in group], n):
                yield [(group[j], k) for j, k in spread], n

    def _compatible(self, c: _Class, slots: tuple[tuple[int, int], ...]) -> bool:
        for slot, a in slots:
            v = c.values[a]
            if v is None:
                return False
            b = self.bound[slot]
            if b is not None and b != v:
                return False
        return True

    @staticmethod
    def _agree(classes: list[_Class], slots: tuple[tuple[int, int], ...]) -> bool:
        return all(len({c.values[a] for c in classes}) == 1 for _, a in slots)

    def _bind(
        self, req: _Request, takes: list[tuple[_Class, int]]
    ) -> list[tuple[int, tuple[str, object] | None]]:
        saved = []
        first = takes[0][0]
        for slot, a in req.slots:
            saved.append((slot, self.bound[slot]))
            self.bound[slot] = first.values[a]
        return saved

    def _unbind(self, req: _Request, saved: list[tuple[int, tuple[str, object] | None]]) -> None:
        for slot, old in saved:
            self.bound[slot] = old

    def _allocation(self) -> tuple[ClaimAllocation, ...]:
        per_claim: list[list[DeviceAllocation]] = [[] for _ in self.claims]
        for req, (sub, placed) in zip(self.requests, self.picks, strict=True):
            r = req.request
            name = f"{r.name}/{sub.name}" if r.first_available else r.name
            for cls, start, k in placed:
                for dk in cls.devices[start : start + k]:
                    per_claim[req.claim].append(
                        DeviceAllocation(name, dk, sub.device_class, cls.shareable)
                    )
        return tuple(
            ClaimAllocation(c.name, tuple(devs))
            for c, devs in zip(self.claims, per_claim, strict=True)
        )


def _spreads(free: list[int], n: int) -> Iterator[list[tuple[int, int]]]:
    """Every way to take `n` from bins holding `free`, as (bin, count>0) lists, taking as
    much as possible from earlier bins first."""
    suffix = [0] * (len(free) + 1)
    for j in range(len(free) - 1, -1, -1):
        suffix[j] = suffix[j + 1] + free[j]
    chosen: list[tuple[int, int]] = []

    def walk(j: int, left: int) -> Iterator[list[tuple[int, int]]]:
        if left == 0:
            yield list(chosen)
            return
        if j == len(free) or suffix[j] < left:
            return
        for k in range(min(free[j], left), max(0, left - suffix[j + 1]) - 1, -1):
            if k:
                chosen.append((j, k))
            yield from walk(j + 1, left - k)
            if k:
                chosen.pop()

    yield from walk(0, n)
