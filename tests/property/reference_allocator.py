"""A brute-force DRA allocator and checker, written from the model and not from the engine.

It enumerates every assignment of devices to requests (every alternative, every
combination of devices) for one pod's claims on one node, and every pod -> node choice
for a small gang, so it is only usable on tiny instances. Device matching uses Python
predicates that mean what the test's CEL selectors say, so it shares no matching code
with the engine either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from controller.engine.model import (
    AllocationMode,
    Device,
    DeviceKey,
    DeviceRequest,
    DeviceSubRequest,
    Node,
    PodClaim,
    PodSet,
)

Predicate = Callable[[Device], bool]
Picks = dict[tuple[str, str], tuple[str, tuple[DeviceKey, ...]]]
"""(claim, request) -> (alternative name, devices)."""


@dataclass
class World:
    """Devices (node None: reachable from every node), what holds them, and the meaning of
    every class and selector used."""

    devices: Mapping[DeviceKey, Device]
    held: frozenset[DeviceKey]
    classes: Mapping[str, Predicate]
    selectors: Mapping[str, Predicate]
    nodes: Mapping[str, Node] = field(default_factory=dict)

    def matches(self, d: Device, sub: DeviceSubRequest) -> bool:
        cls = self.classes.get(sub.device_class)
        return cls is not None and cls(d) and all(self.selectors[s](d) for s in sub.selectors)

    def reachable(self, node: str) -> list[Device]:
        return [d for k, d in sorted(self.devices.items()) if d.node in (node, None)]


def typed(value: object) -> tuple[type, object]:
    return (type(value), value)


def _requests(claims: Sequence[PodClaim]) -> list[tuple[PodClaim, DeviceRequest]]:
    return [(c, r) for c in claims for r in c.spec.requests]


def pod_allocations(
    world: World,
    node: str,
    claims: Sequence[PodClaim],
    taken: frozenset[DeviceKey] = frozenset(),
    budget: Mapping[str, int] | None = None,
) -> Iterator[Picks]:
    """Every valid allocation of the pod's claims on `node`; `taken` are devices earlier
    pods of the same gang hold (usable again only if shareable)."""
    requests = _requests(claims)
    usable = [
        d
        for d in world.reachable(node)
        if d.shareable or (d.key not in world.held and d.key not in taken)
    ]
    everything = world.reachable(node)

    def walk(i: int, used: frozenset[DeviceKey], picks: Picks) -> Iterator[Picks]:
        if i == len(requests):
            if valid_pod(world, node, claims, picks, taken, budget) is None:
                yield dict(picks)
            return
        claim, req = requests[i]
        for sub in req.alternatives:
            pool = [d for d in usable if d.key not in used and world.matches(d, sub)]
            if sub.mode is AllocationMode.ALL:
                allm = [d for d in everything if world.matches(d, sub)]
                options: list[tuple[Device, ...]] = (
                    [tuple(allm)] if allm and len(pool) == len(allm) else []
                )
            else:
                options = list(combinations(pool, sub.count))
            for chosen in options:
                keys = tuple(d.key for d in chosen)
                picks[(claim.name, req.name)] = (sub.name, keys)
                yield from walk(i + 1, used | set(keys), picks)
                del picks[(claim.name, req.name)]

    yield from walk(0, frozenset(), {})


def valid_pod(
    world: World,
    node: str,
    claims: Sequence[PodClaim],
    picks: Picks,
    taken: frozenset[DeviceKey] = frozenset(),
    budget: Mapping[str, int] | None = None,
) -> str | None:
    """Why `picks` is not a valid allocation of the pod's claims on `node`, or None."""
    seen: set[DeviceKey] = set()
    per_class: dict[str, int] = {}
    if set(picks) != {(c.name, r.name) for c, r in _requests(claims)}:
        return f"requests {sorted(picks)}"
    for claim, req in _requests(claims):
        alt_name, keys = picks[(claim.name, req.name)]
        alts = [a for a in req.alternatives if a.name == alt_name]
        if not alts:
            return f"{req.name}: no alternative {alt_name}"
        sub = alts[0]
        for d_key in keys:
            d = world.devices.get(d_key)
            if d is None or d.node not in (node, None):
                return f"{req.name}: {d_key} not reachable from {node}"
            if not world.matches(d, sub):
                return f"{req.name}: {d_key} does not match"
            if not d.shareable and (d_key in world.held or d_key in taken):
                return f"{req.name}: {d_key} is held"
            if d_key in seen:
                return f"{req.name}: {d_key} used twice"
            seen.add(d_key)
        if sub.mode is AllocationMode.ALL:
            allm = {d.key for d in world.reachable(node) if world.matches(d, sub)}
            if not allm or set(keys) != allm:
                return f"{req.name}: All got {sorted(keys)}"
        elif len(keys) != sub.count:
            return f"{req.name}: {len(keys)} devices, not {sub.count}"
        per_class[sub.device_class] = per_class.get(sub.device_class, 0) + len(keys)
    for cls, n in per_class.items():
        if budget is not None and cls in budget and n > budget[cls]:
            return f"{n} {cls} devices over budget {budget[cls]}"
    for claim in claims:
        for c in claim.spec.constraints:
            names = c.requests or tuple(r.name for r in claim.spec.requests)
            values = set()
            for name in names:
                for d_key in picks[(claim.name, name)][1]:
                    attrs = world.devices[d_key].attributes
                    if c.attribute not in attrs:
                        return f"{claim.name}: {d_key} lacks {c.attribute}"
                    values.add(typed(attrs[c.attribute]))
            if len(values) > 1:
                return f"{claim.name}: {c.attribute} values {values}"
    return None


def preference(claims: Sequence[PodClaim], picks: Picks) -> tuple[int, ...]:
    """Alternative indices in request order: firstAvailable prefers smaller, in order."""
    out = []
    for claim, req in _requests(claims):
        name = picks[(claim.name, req.name)][0]
        out.append(next(i for i, a in enumerate(req.alternatives) if a.name == name))
    return tuple(out)


def gang_fits(
    world: World,
    pod_sets: Sequence[PodSet],
    used: Mapping[str, Mapping[str, int]],
    budget: Mapping[str, int] | None = None,
) -> bool:
    """Whether every pod of the pod sets gets a node (capacity `used` already taken) and
    its devices, by trying every pod -> node and every allocation."""
    pods = [ps for ps in pod_sets for _ in range(ps.count)]
    load = {n: dict(used.get(n, {})) for n in world.nodes}
    room = dict(budget or {})

    def walk(i: int, taken: frozenset[DeviceKey]) -> bool:
        if i == len(pods):
            return True
        ps = pods[i]
        want = {**ps.requests, "pods": ps.requests.get("pods", 0) + 1}
        for name, node in sorted(world.nodes.items()):
            if any(node.labels.get(k) != v for k, v in ps.node_selector.items()):
                continue
            if any(load[name].get(r, 0) + v > node.allocatable.get(r, 0) for r, v in want.items()):
                continue
            for picks in pod_allocations(world, name, ps.claims, taken, room):
                charge = _charge(ps.claims, picks)
                for r, v in want.items():
                    load[name][r] = load[name].get(r, 0) + v
                for cls, n in charge.items():
                    if cls in room:
                        room[cls] -= n
                keys = {k for _, ks in picks.values() for k in ks}
                ok = walk(i + 1, taken | keys)
                for r, v in want.items():
                    load[name][r] -= v
                for cls, n in charge.items():
                    if cls in room:
                        room[cls] += n
                if ok:
                    return True
        return False

    return walk(0, frozenset())


def _charge(claims: Sequence[PodClaim], picks: Picks) -> dict[str, int]:
    out: dict[str, int] = {}
    for claim, req in _requests(claims):
        alt_name, keys = picks[(claim.name, req.name)]
        sub = next(a for a in req.alternatives if a.name == alt_name)
        out[sub.device_class] = out.get(sub.device_class, 0) + len(keys)
    return out
