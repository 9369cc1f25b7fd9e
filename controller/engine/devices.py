"""DRA device inventory: slices, classes, who holds each device, and match-set indexes.

A match set is the set of devices that satisfy one (DeviceClass, request selectors)
pair. CEL runs once per distinct device content when the set is first asked for; after
that, slice changes update the sets in place and allocations only move counters, so an
admission cycle never re-evaluates CEL per device.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from sortedcontainers import SortedSet

from controller.engine.cel import CompiledSelector, compile_selector, evaluate_many
from controller.engine.errors import InvalidInput
from controller.engine.model import (
    AttributeValue,
    Device,
    DeviceClass,
    DeviceKey,
    ResourceSlice,
    Version,
    attribute_identity,
)

MatchKey = tuple[str, tuple[str, ...]]
"""(DeviceClass name, request selectors): what a device must satisfy for a request."""


def _content_signature(d: Device) -> tuple[object, ...]:
    """What a selector can see of a device; attribute values keep their type, so a
    device with `flag: 1` never takes the result computed for `flag: true`."""
    return (
        d.driver,
        d.shareable,
        tuple((k, attribute_identity(v)) for k, v in sorted(d.attributes.items())),
        tuple(sorted(d.capacity.items())),
    )


def domain_label(value: AttributeValue | Version) -> str:
    """How a device-attribute topology domain is named: a string as itself, any other
    value with its type (`1 (int)`, `true (bool)`, `1.2.0 (version)`), so values that
    print alike (the string "1", the int 1) name different domains. One label per typed
    value: only typed labels end in ")", so a string that does is quoted and typed too."""
    kind, plain = attribute_identity(value)
    if kind == "string":
        text = str(plain)
        return f"{json.dumps(text)} (string)" if text.endswith(")") else text
    return f"{str(plain).lower() if kind == 'bool' else plain} ({kind})"


@dataclass
class MatchSet:
    """Devices matching one MatchKey, grouped by node, with free counts per node."""

    key: MatchKey
    by_node: dict[str | None, list[DeviceKey]] = field(default_factory=dict)
    free: dict[str | None, int] = field(default_factory=dict)
    buckets: dict[int, list[str]] = field(default_factory=dict)
    """Nodes by their free count, each bucket sorted by name."""
    errors: dict[DeviceKey, str] = field(default_factory=dict)
    class_missing: bool = False
    shareable: int = 0
    """Members that allow multiple allocations: counting free devices bounds nothing."""
    free_total: int = 0
    """The sum of `free` (kept by `_set_free`, its only writer)."""
    _fitting: dict[int, int] = field(default_factory=dict, repr=False, compare=False)
    """`pods_fitting` per pod size while the free counts stay (emptied by `_set_free`):
    the walk asks it of every group it puts to sleep."""

    def total_free(self) -> int:
        return self.free_total

    def nodes_with_free(self, minimum: int, descending: bool = False) -> Iterator[str]:
        """Nodes with at least `minimum` free matching devices, fewest free first."""
        for k in self.levels(minimum, descending):
            yield from self.buckets[k]

    def levels(self, minimum: int, descending: bool = False) -> list[int]:
        """The free counts of at least `minimum` some node has (`buckets`' keys), in the
        order `nodes_with_free` walks them."""
        return sorted([k for k in self.buckets if k >= minimum], reverse=descending)

    def pods_fitting(self, per_pod: int) -> int:
        """How many pods needing `per_pod` devices the free devices could serve (an upper
        bound: unbounded when shareable devices match). A pod may complete its node's
        devices with network-attached ones, so node remainders pool with those."""
        if self.shareable:
            return 1 << 62
        if per_pod <= 0:
            return 0
        known = self._fitting.get(per_pod)
        if known is not None:
            return known
        total = 0
        for k, nodes in self.buckets.items():  # a loop, not sum(): no generator per call
            if k >= per_pod:
                total += (k // per_pod) * len(nodes)
        network = self.free.get(None, 0)
        if network:
            rest = sum((k % per_pod) * len(nodes) for k, nodes in self.buckets.items())
            total += (network + rest) // per_pod
        self._fitting[per_pod] = total
        return total

    def _set_free(self, node: str | None, value: int) -> None:
        if self._fitting:
            self._fitting.clear()
        free = self.free
        old = free.get(node, 0)
        self.free_total += value - old
        if value:
            free[node] = value
        else:
            free.pop(node, None)
        if node is None:
            return
        buckets = self.buckets
        if old:
            bucket = buckets[old]
            i = bisect_left(bucket, node)
            if i < len(bucket) and bucket[i] == node:
                del bucket[i]
        if value > 0:
            into = buckets.get(value)
            if into is None:
                into = buckets[value] = []
            i = bisect_left(into, node)
            if i == len(into) or into[i] != node:
                into.insert(i, node)


@dataclass(frozen=True, slots=True)
class HeldBatch:
    """Exclusive published devices with their owners, and how many of them each match
    set has per node (see `DeviceInventory.exclusive_batch`)."""

    stamp: tuple[int, int]
    held: tuple[tuple[DeviceKey, str], ...]
    counts: tuple[tuple[MatchSet, str | None, int], ...]


class DeviceInventory:
    """All published devices and their allocations (ours and everyone else's)."""

    def __init__(self) -> None:
        self.devices: dict[DeviceKey, Device] = {}
        self.slices: dict[str, ResourceSlice] = {}
        self.classes: dict[str, DeviceClass] = {}
        self.owners: dict[DeviceKey, set[str]] = {}
        self.held_published = 0
        """Published devices with at least one holder, kept as holders and slices change
        (free unshared devices are the rest: counted without a pass over them)."""
        self._by_node: dict[str | None, SortedSet[DeviceKey]] = {}
        self._slice_of: dict[DeviceKey, str] = {}
        self._unpublished_shareable: dict[DeviceKey, bool] = {}
        self._attr_domains: dict[str, tuple[int, dict[str, dict[str, list[DeviceKey]]]]] = {}
        self._compiled: dict[str, tuple[CompiledSelector, ...]] = {}
        self._matches: dict[MatchKey, MatchSet] = {}
        self._member_of: dict[DeviceKey, set[MatchKey]] = {}
        self.generation = 0

    # ---- slices ----------------------------------------------------------------------
    def upsert_slice(self, rs: ResourceSlice) -> None:
        """Add or replace a slice; match sets are updated for its devices only."""
        for d in rs.devices:
            if self._slice_of.get(d.key, rs.name) != rs.name:
                raise InvalidInput(
                    f"resourceSlice {rs.name}",
                    f"device {d.key_text} is already published by another slice",
                )
        if rs.name in self.slices:
            self.remove_slice(rs.name)
        self.slices[rs.name] = rs
        for d in rs.devices:
            if d.key not in self.devices and self.owners.get(d.key):
                self.held_published += 1
            self.devices[d.key] = d
            self._unpublished_shareable.pop(d.key, None)
            self._slice_of[d.key] = rs.name
            self._by_node.setdefault(d.node, SortedSet()).add(d.key)
            for ms in self._matches.values():
                self._consider(ms, d)
        self.generation += 1

    def remove_slice(self, name: str) -> None:
        rs = self.slices.pop(name, None)
        if rs is None:
            return
        for d in rs.devices:
            was_free = self.is_free(d.key)
            if self.owners.get(d.key):
                self._unpublished_shareable[d.key] = d.shareable
                self.held_published -= d.key in self.devices
            self.devices.pop(d.key, None)
            self._slice_of.pop(d.key, None)
            node_set = self._by_node.get(d.node)
            if node_set is not None:
                node_set.discard(d.key)
            for mk in self._member_of.pop(d.key, set()):
                ms = self._matches[mk]
                ms.by_node[d.node].remove(d.key)
                ms.shareable -= d.shareable
                if not ms.by_node[d.node]:
                    del ms.by_node[d.node]
                if was_free:
                    ms._set_free(d.node, ms.free.get(d.node, 0) - 1)
            for ms in self._matches.values():
                ms.errors.pop(d.key, None)
        self.generation += 1

    def attribute_domains(self, key: str) -> dict[str, dict[str, list[DeviceKey]]]:
        """Devices grouped by their (typed) value of attribute `key`, then by node, keyed
        by the domain's `domain_label` (cached)."""
        hit = self._attr_domains.get(key)
        if hit is None or hit[0] != self.generation:
            groups: dict[tuple[str, object], dict[str, list[DeviceKey]]] = {}
            labels: dict[tuple[str, object], str] = {}
            for node in sorted(n for n in self._by_node if n is not None):
                for dk in self._by_node[node]:
                    v = self.devices[dk].attributes.get(key)
                    if v is not None:
                        identity = attribute_identity(v)
                        labels.setdefault(identity, domain_label(v))
                        groups.setdefault(identity, {}).setdefault(node, []).append(dk)
            hit = (
                self.generation,
                {labels[i]: groups[i] for i in sorted(groups, key=lambda i: labels[i])},
            )
            self._attr_domains[key] = hit
        return hit[1]

    def memberships(self, key: DeviceKey) -> frozenset[MatchKey]:
        """The match sets built so far that hold the device."""
        return frozenset(self._member_of.get(key, ()))

    def node_device_count(self, node: str) -> int:
        return len(self._by_node.get(node, ()))

    def devices_on(self, node: str | None) -> list[DeviceKey]:
        return list(self._by_node.get(node, ()))

    # ---- classes ---------------------------------------------------------------------
    def upsert_class(self, dc: DeviceClass) -> None:
        """Add or replace a DeviceClass; a selector that does not compile changes nothing."""
        compiled = tuple(
            compile_selector(
                expr, where=f"deviceClass {dc.name}: spec.selectors[{i}].cel.expression"
            )
            for i, expr in enumerate(dc.selectors)
        )
        self.classes[dc.name] = dc
        self._compiled[dc.name] = compiled
        self._drop_matches(dc.name)
        self.generation += 1

    def remove_class(self, name: str) -> None:
        self.classes.pop(name, None)
        self._compiled.pop(name, None)
        self._drop_matches(name)
        self.generation += 1

    def _drop_matches(self, class_name: str) -> None:
        for mk in [mk for mk in self._matches if mk[0] == class_name]:
            del self._matches[mk]
            for members in self._member_of.values():
                members.discard(mk)

    # ---- matching --------------------------------------------------------------------
    def match_set(self, key: MatchKey) -> MatchSet:
        """The devices matching `key`, built on first use and kept up to date after."""
        ms = self._matches.get(key)
        if ms is not None:
            return ms
        class_name, _extra = key
        ms = MatchSet(key)
        if class_name not in self._compiled:
            ms.class_missing = True
        else:
            selectors = self._selectors(key)
            memo: dict[tuple[object, ...], tuple[bool, str | None]] = {}
            for node in sorted(self._by_node, key=lambda n: (n is not None, n or "")):
                for dk in self._by_node[node]:
                    self._consider(ms, self.devices[dk], selectors, memo)
        self._matches[key] = ms
        return ms

    def _selectors(self, key: MatchKey) -> tuple[CompiledSelector, ...]:
        class_name, extra = key
        return self._compiled[class_name] + tuple(
            compile_selector(e, where=f"request selector of class {class_name}") for e in extra
        )

    def _consider(
        self,
        ms: MatchSet,
        d: Device,
        selectors: tuple[CompiledSelector, ...] | None = None,
        memo: dict[tuple[object, ...], tuple[bool, str | None]] | None = None,
    ) -> None:
        if ms.class_missing:
            return
        if selectors is None:
            selectors = self._selectors(ms.key)
        sig = _content_signature(d)
        hit = memo.get(sig) if memo is not None else None
        if hit is None:
            result = evaluate_many(selectors, d)
            hit = (result.matched, result.error)
            if memo is not None:
                memo[sig] = hit
        matched, error = hit
        if error is not None:
            ms.errors[d.key] = error
        if not matched:
            return
        ms.by_node.setdefault(d.node, []).append(d.key)
        ms.by_node[d.node].sort()
        ms.shareable += d.shareable
        self._member_of.setdefault(d.key, set()).add(ms.key)
        if self.is_free(d.key):
            ms._set_free(d.node, ms.free.get(d.node, 0) + 1)

    # ---- allocation ------------------------------------------------------------------
    def is_shareable(self, key: DeviceKey) -> bool:
        """As published, or as last published for an unpublished device still held."""
        d = self.devices.get(key)
        if d is not None:
            return d.shareable
        return self._unpublished_shareable.get(key, False)

    def remember_shareable(self, key: DeviceKey) -> None:
        """Note that an unpublished device was given out as shareable (restoring a record)."""
        if key not in self.devices:
            self._unpublished_shareable[key] = True

    def is_free(self, key: DeviceKey) -> bool:
        if not self.owners.get(key):
            return True
        d = self.devices.get(key)
        return d.shareable if d is not None else self._unpublished_shareable.get(key, False)

    def allocate(self, keys: Iterable[DeviceKey], owner: str) -> None:
        """Record `owner` as holding the devices (which may not be published at all)."""
        self.allocate_owned((key, owner) for key in keys)

    def allocate_owned(self, held: Iterable[tuple[DeviceKey, str]]) -> None:
        """`allocate` for (device, owner) pairs at once."""
        owners, devices = self.owners, self.devices
        moved: list[tuple[DeviceKey, str | None]] = []
        taken = 0
        for key, owner in held:
            holders = owners.get(key)
            if holders:  # free before only if shareable, and then still free
                holders.add(owner)
                continue
            owners[key] = {owner}
            d = devices.get(key)
            if d is not None:  # an unpublished device is in no match set
                taken += 1
                if not d.shareable:
                    moved.append((key, d.node))
        self.held_published += taken
        if moved:
            self._shift(moved, -1)

    def release(self, keys: Iterable[DeviceKey], owner: str) -> None:
        """Drop `owner` from the devices' holders; refuses (changing nothing) if it holds
        any of them not."""
        self.release_owned([(key, owner) for key in keys])

    def release_owned(self, held: list[tuple[DeviceKey, str]]) -> None:
        """`release` for (device, owner) pairs at once; refuses (changing nothing) if
        any of them is not held so."""
        owners, devices = self.owners, self.devices
        for key, owner in held:
            if owner not in owners.get(key, ()):
                raise InvalidInput(f"device {'/'.join(key)}", f"is not held by {owner}")
        moved: list[tuple[DeviceKey, str | None]] = []
        unpublished = self._unpublished_shareable
        given = 0
        for key, owner in held:
            holders = owners[key]
            holders.discard(owner)
            if holders:  # still held: free after only if shareable, and then before too
                continue
            del owners[key]
            if unpublished:
                unpublished.pop(key, None)
            d = devices.get(key)
            if d is not None:  # an unpublished device is in no match set
                given += 1
                if not d.shareable:
                    moved.append((key, d.node))
        self.held_published -= given
        if moved:
            self._shift(moved, +1)

    # ---- whole reservations of exclusive devices, in one batch ---------------------------
    def batch_stamp(self) -> tuple[int, int]:
        """What a `HeldBatch` depends on: slices and classes (`generation`), and the match
        sets built so far (they only grow between generations)."""
        return (self.generation, len(self._matches))

    def exclusive_batch(self, held: Sequence[tuple[DeviceKey, str]]) -> HeldBatch | None:
        """The free-count changes of taking or giving back `held` at once, when every
        device is published, not shareable and named once (None otherwise): what
        `allocate_owned` and `release_owned` would work out device by device."""
        devices, member_of = self.devices, self._member_of
        counts: dict[tuple[MatchKey, str | None], int] = {}
        for key, _ in held:
            d = devices.get(key)
            if d is None or d.shareable:
                return None
            for mk in member_of.get(key, ()):
                counts[(mk, d.node)] = counts.get((mk, d.node), 0) + 1
        if len({key for key, _ in held}) != len(held):
            return None
        matches = self._matches
        return HeldBatch(
            self.batch_stamp(),
            tuple(held),
            tuple((matches[mk], node, n) for (mk, node), n in counts.items()),
        )

    def release_batch(self, batch: HeldBatch) -> bool:
        """`release_owned(batch.held)` when each device is held by its owner alone and
        the batch is current; False, changing nothing, otherwise (use `release_owned`)."""
        if batch.stamp != self.batch_stamp():
            return False
        owners = self.owners
        for key, owner in batch.held:
            holders = owners.get(key)
            if holders is None or len(holders) != 1 or owner not in holders:
                return False
        for key, _ in batch.held:
            del owners[key]
        self.held_published -= len(batch.held)
        for ms, node, n in batch.counts:
            ms._set_free(node, ms.free.get(node, 0) + n)
        return True

    def allocate_batch(self, batch: HeldBatch) -> bool:
        """`allocate_owned(batch.held)` when no device is held and the batch is current;
        False, changing nothing, otherwise (use `allocate_owned`)."""
        if batch.stamp != self.batch_stamp():
            return False
        owners = self.owners
        for key, _ in batch.held:
            if owners.get(key):
                return False
        for key, owner in batch.held:
            owners[key] = {owner}
        self.held_published += len(batch.held)
        for ms, node, n in batch.counts:
            ms._set_free(node, ms.free.get(node, 0) - n)
        return True

    def _shift(self, moved: list[tuple[DeviceKey, str | None]], step: int) -> None:
        """Move free counts once per (match set, node) for a batch of published devices
        (each with its node)."""
        member_of = self._member_of
        deltas: dict[tuple[MatchKey, str | None], int] = {}
        run: set[MatchKey] | None = None
        run_node: str | None = None
        n = 0
        for key, node in moved:
            members = member_of.get(key)
            if members is None:
                continue
            if node == run_node and members == run:
                n += 1  # a claim's devices: one node, the same match sets
                continue
            if run:
                for mk in run:
                    deltas[(mk, run_node)] = deltas.get((mk, run_node), 0) + step * n
            run, run_node, n = members, node, 1
        if run:
            for mk in run:
                deltas[(mk, run_node)] = deltas.get((mk, run_node), 0) + step * n
        matches = self._matches
        for (mk, node), delta in deltas.items():
            ms = matches[mk]
            ms._set_free(node, ms.free.get(node, 0) + delta)

    def double_allocations(self) -> list[str]:
        """Devices held by more than one claim without being shareable (invariant 1)."""
        out = []
        for key, holders in sorted(self.owners.items()):
            if len(holders) > 1 and not self.is_shareable(key):
                out.append(f"device {'/'.join(key)} held by {sorted(holders)}")
        return out
