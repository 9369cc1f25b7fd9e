"""Pending gangs in groups the cycle decides alike, so a cycle costs what changed.

Gangs of one leaf queue, namespace and placement shape meet the same queue check, the
same quota lower bound and the same placement problem. While a cycle runs without
preemption, usage only grows and free capacity only shrinks, so once the first of a
group fails for one of those reasons the rest of the group fails too, in this cycle.
Each group is kept sorted by the ordering's key; a cycle merges the groups' heads in
that key order and stops walking a group at its first such failure, instead of walking
the whole backlog. Groups follow the pending gangs that changed (the engine reads them
from a `PendingJournal`), so keeping them costs O(changed), not O(backlog).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from sortedcontainers import SortedList

from controller.engine.model import AllocationMode, Gang
from controller.engine.state import ClusterState

Entry = tuple[tuple[Any, ...], str]
"""A gang's place in the ordering: (the ordering's key, uid)."""


class Backlog:
    """Pending gangs by group, each group sorted by the ordering's key."""

    def __init__(
        self,
        state: ClusterState,
        owner: object,
        key: Callable[[Gang], tuple[Any, ...]],
        group_of: Callable[[Gang], Hashable],
    ) -> None:
        self.state = state
        self.owner = owner
        """The ordering policy whose key sorts the groups."""
        self._key = key
        self._group_of = group_of
        self.groups: dict[Hashable, SortedList[Entry]] = {}
        self.place: dict[str, tuple[Hashable, Entry]] = {}
        self.fresh: set[str] = set()
        """Gangs that joined since the last cycle and were told no reason yet."""

    def sync(self, changed: Iterable[str]) -> None:
        """Follow pending gangs added, replaced or removed (`changed`, all of them since
        the last sync; every pending gang for a new Backlog)."""
        pending = self.state.pending
        for uid in sorted(changed):
            old = self.place.pop(uid, None)
            if old is not None:
                group = self.groups[old[0]]
                group.remove(old[1])
                if not group:
                    del self.groups[old[0]]
            gang = pending.get(uid)
            if gang is None:
                self.fresh.discard(uid)
                continue
            where = self._group_of(gang)
            entry = (self._key(gang), uid)
            self.place[uid] = (where, entry)
            self.groups.setdefault(where, SortedList()).add(entry)
            self.fresh.add(uid)

    def heads(self) -> list[tuple[Entry, Hashable]]:
        """Each group's first gang, with its group."""
        return [(group[0], where) for where, group in self.groups.items()]

    def after(self, where: Hashable, entry: Entry) -> Entry | None:
        """The group's next gang after `entry` (which may have left it meanwhile)."""
        group = self.groups.get(where)
        if group is None:
            return None
        i = group.bisect_right(entry)
        return group[i] if i < len(group) else None


def charge_is_exact(gang: Gang) -> bool:
    """Whether the gang's quota charge is its minimum charge whatever devices it gets
    (no firstAvailable, no allocationMode All): a quota refusal then holds for its group."""
    return all(
        len(req.alternatives) == 1 and req.alternatives[0].mode is AllocationMode.EXACT_COUNT
        for ps in gang.pod_sets
        for claim in ps.claims
        for req in claim.spec.requests
    )
