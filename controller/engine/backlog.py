"""Pending gangs in groups the cycle decides alike, so a cycle costs what changed.

Gangs of one leaf queue, namespace and placement shape meet the same queue check, the
same quota lower bound and the same placement problem. Until something is evicted,
usage only grows and free capacity only shrinks in a cycle, so once the first of a
group fails for one of those reasons the rest of the group fails too. Under a
preemption policy they would still search victims where their queue was not searched
yet and `could_help` says yes, so groups are also split by the policy's `help_key`
(gangs it answers alike for), and the engine leaves a group out only while no search
would happen for it; evictions resume the groups that may fit again (engine/cycle.py).
Each group is kept sorted by the ordering's key; a cycle merges the groups' heads in
that key order and stops walking a group at its first such failure, instead of walking
the whole backlog. Groups follow the pending gangs that changed (the engine reads them
from a `PendingJournal`), so keeping them costs O(changed), not O(backlog).

A shape some pod set of which needs more pods of `k` devices than the free devices of
its match set can host (`MatchSet.pods_fitting`) cannot be placed, whatever else is
free: its groups sleep, indexed by (match set, k) and that pod count, and wake only
when the free devices could host that many pods. Likewise a group refused quota for a
charge it needs whatever it gets sleeps, indexed by (queue, resource) and the amount,
until the queue's headroom for that resource reaches the amount (or the queue tree or
namespaces change). A cycle after one gang finished thus looks at the groups that could
use what it freed, not at every group.

Under preemption, the groups asleep on quota are not woken at a cycle's start when their
room grows (the room is `held`): the walk takes them behind their classes' cursors (a
class preemption may help) or through a gate per room (the others: see
`Engine._held_rooms`), and wakes each at its turn unless that turn would pass it as
decided, which it does for most once a gang before them took the room again (see
`Engine._walk_groups`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sortedcontainers import SortedList

from controller.engine.devices import DeviceInventory, MatchKey
from controller.engine.model import AllocationMode, Gang
from controller.engine.placement import GangPlan
from controller.engine.state import ClusterState

Entry = tuple[tuple[Any, ...], str]
"""A gang's place in the ordering: (the ordering's key, uid)."""
GroupKey = tuple[str, str, int, int]
"""(leaf queue, namespace, shape id, help id): the help id numbers the preemption
policy's `help_key` of the gang (0 without preemption)."""
HelpClass = tuple[str, int]
"""(leaf queue, help id): gangs `could_help` answers alike for."""
Need = tuple[MatchKey, int]
"""(match set, devices per pod) of a pod set's largest device request."""
Room = tuple[str, str]
"""(leaf queue, resource) whose quota headroom a group waits for."""
Position = tuple[Entry, GroupKey]
"""Where the walk is in one group: the entry of the group's next gang, and the group."""


class Backlog:
    """Pending gangs by group, each group sorted by the ordering's key; groups whose
    shape cannot be placed now are asleep and left out of `heads`."""

    def __init__(
        self,
        state: ClusterState,
        owner: object,
        key: Callable[[Gang], tuple[Any, ...]],
        group_of: Callable[[Gang], GroupKey],
    ) -> None:
        self.state = state
        self.owner = owner
        """The ordering policy whose key sorts the groups."""
        self._key = key
        self._group_of = group_of
        self.groups: dict[GroupKey, SortedList[Entry]] = {}
        self.place: dict[str, tuple[GroupKey, Entry]] = {}
        self.fresh: set[str] = set()
        """Gangs that joined since the last cycle and were told no reason yet."""
        self._of_shape: dict[int, set[GroupKey]] = {}
        self.classes: dict[HelpClass, set[GroupKey]] = {}
        self.awake: set[GroupKey] = set()
        self.asleep: dict[int, tuple[Need, int]] = {}
        """Sleeping shapes: the need they wait for and how many pods of it."""
        self._sleepers: dict[Need, SortedList[tuple[int, int]]] = {}
        self.short_of_quota: dict[GroupKey, tuple[Room, int]] = {}
        self._quota_sleepers: dict[Room, list[tuple[int, GroupKey, tuple[Room, int]]]] = {}
        """Per room, heaps of (amount, group, its `short_of_quota` record): an entry
        whose record is no longer the group's is stale, skipped when it surfaces."""
        self._quota_live: dict[Room, int] = {}
        """Groups asleep per room (its heap's entries that are not stale)."""
        self._queues_seen = (-1, -1)
        self._epoch_seen = -1
        self._heads: dict[GroupKey, Entry] = {}
        self.dormant: dict[HelpClass, SortedList[Position]] = {}
        """Per class, the positions (head, group) of its groups not awake, as of the last
        `settle_dormant`: what a cycle walks only in case preemption helps them."""
        self.dormant_at: dict[GroupKey, Position] = {}
        """Each group's position in `dormant` (the same tuple)."""
        self._dirty: set[GroupKey] = set()
        """Groups whose head or wakefulness changed since the last `settle_dormant`."""
        self.woke: set[GroupKey] = set()
        """Groups woken at the start of this cycle (still in `dormant`)."""
        self.dormant_wanted = True
        """Keep `dormant` (a walk with no preemption never reads it)."""
        self.unsure: set[GroupKey] = set()
        """Groups asleep on quota whose amount may not be what their head's turn would
        find: the group changed since, it slept on a gang that is not its head, or its
        shape sleeps too (a wake ending its sleep on quota would not rouse it)."""
        self.slept_now: set[GroupKey] = set()
        """Groups that fell asleep on quota in this cycle."""
        self.raised: list[tuple[int, GroupKey]] = []
        """Groups the last `wake` held for a room held further, with their amounts."""
        self._slept_in: dict[Room, list[GroupKey]] = {}
        """The same, per room they sleep on."""
        self.held: dict[Room, int] = {}
        """Rooms whose sleepers the start of this cycle left asleep though the room had
        grown (`start_cycle`), with the room then."""
        self.watched: set[GroupKey] = set()
        """Groups whose `is_held` a reader relies on, in this cycle (`changes`)."""
        self.changes: dict[Room, int] = {}
        """Per room, a count of the changes that can change `is_held` of its `watched`
        sleepers (one woke, fell asleep or left, or the room is held further): while it
        stands still, each of them is held or not as before."""

    def sync(self, changed: Iterable[str]) -> None:
        """Follow pending gangs added, replaced or removed (`changed`, all of them since
        the last sync; every pending gang for a new Backlog)."""
        pending = self.state.pending
        for uid in sorted(changed):
            old = self.place.pop(uid, None)
            if old is not None:
                self._heads.pop(old[0], None)
                self._dirty.add(old[0])
                if old[0] in self.short_of_quota:
                    self.unsure.add(old[0])
                self._leave(*old)
            gang = pending.get(uid)
            if gang is None:
                self.fresh.discard(uid)
                continue
            where = self._group_of(gang)
            entry = (self._key(gang), uid)
            self.place[uid] = (where, entry)
            self._heads.pop(where, None)
            self._dirty.add(where)
            if where in self.short_of_quota:
                self.unsure.add(where)
            group = self.groups.get(where)
            if group is None:
                group = self.groups[where] = SortedList()
                self._of_shape.setdefault(where[2], set()).add(where)
                self.classes.setdefault((where[0], where[3]), set()).add(where)
                self._rouse(where)
            group.add(entry)
            self.fresh.add(uid)

    def _leave(self, where: GroupKey, entry: Entry) -> None:
        group = self.groups[where]
        group.remove(entry)
        if group:
            return
        del self.groups[where]
        self.awake.discard(where)
        alike = self.classes[where[0], where[3]]
        alike.discard(where)
        if not alike:
            del self.classes[where[0], where[3]]
        self.unsure.discard(where)
        slept_on = self.short_of_quota.pop(where, None)
        if slept_on is not None:
            self._quota_live[slept_on[0]] -= 1  # its heap entry is stale now
            self._changed(slept_on[0], where)
        shape = where[2]
        groups = self._of_shape[shape]
        groups.discard(where)
        if not groups:
            del self._of_shape[shape]
            slept = self.asleep.pop(shape, None)
            if slept is not None:
                self._sleepers[slept[0]].remove((slept[1], shape))

    def head(self, where: GroupKey) -> Entry:
        """The group's first gang (kept until the group changes)."""
        entry = self._heads.get(where)
        if entry is None:
            entry = self._heads[where] = self.groups[where][0]
        return entry

    def heads(self) -> list[tuple[Entry, GroupKey]]:
        """Each awake group's first gang, with its group."""
        return [(self.head(where), where) for where in self.awake]

    def after(self, where: GroupKey, entry: Entry) -> Entry | None:
        """The group's next gang after `entry` (which may have left it meanwhile)."""
        group = self.groups.get(where)
        if group is None:
            return None
        i = group.bisect_right(entry)
        return group[i] if i < len(group) else None

    def sleep(self, shape: int, need: Need, pods: int) -> None:
        """Leave the shape's groups out until `pods` pods of `need` could be hosted."""
        if shape in self.asleep or shape not in self._of_shape:
            return
        self.asleep[shape] = (need, pods)
        sleepers = self._sleepers.get(need)
        if sleepers is None:
            sleepers = self._sleepers[need] = SortedList()
        sleepers.add((pods, shape))
        groups = self._of_shape[shape]
        self.awake.difference_update(groups)
        self._dirty.update(groups)
        short = self.short_of_quota
        self.unsure.update(w for w in groups if w in short)

    def sleep_on_quota(self, where: GroupKey, room: Room, amount: int, sure: bool = True) -> None:
        """Leave the group out until its queue has room for `amount` of the resource
        (`sure`: the amount is its head's)."""
        if where in self.short_of_quota or where not in self.groups:
            return
        record = self.short_of_quota[where] = (room, amount)
        self.fell_asleep(where)
        if not sure or where[2] in self.asleep:
            self.unsure.add(where)
        sleepers = self._quota_sleepers.get(room)
        if sleepers is None:
            sleepers = self._quota_sleepers[room] = []
        live = self._quota_live[room] = self._quota_live.get(room, 0) + 1
        heapq.heappush(sleepers, (amount, where, record))
        if len(sleepers) > 4 * live + 64:  # mostly stale: keep the live entries only
            short = self.short_of_quota
            sleepers[:] = [e for e in sleepers if short.get(e[1]) is e[2]]
            heapq.heapify(sleepers)
        self.awake.discard(where)
        self._dirty.add(where)

    def _rouse(self, where: GroupKey) -> bool:
        if where[2] not in self.asleep and where not in self.short_of_quota:
            self.awake.add(where)
            self._dirty.add(where)
            return True
        return False

    def start_cycle(self, hold: Callable[[], dict[Room, int]] | None = None) -> None:
        """Settle `dormant`, then wake the sleepers whose wait is over (`woke`). The
        cycle's walk takes `dormant` less `woke` as the groups not awake: settled before
        the wake, groups that wake at each cycle's start and fall asleep again during it
        leave `dormant` as it was.

        `hold` (asked after settling) names rooms, with their room now, whose sleepers on
        quota are left asleep (`held`) though their wait is over: the walk wakes each when
        its turn comes, if it still is over then (see `Engine._walk_groups`). Unsure
        ones are woken now all the same."""
        self.settle_dormant()
        self.slept_now.clear()
        self._slept_in.clear()
        self.watched.clear()
        self.held = {}
        if hold is not None and self.dormant_wanted:
            state = self.state
            seen = (state.quota.generation, state.namespace_generation)
            if seen == self._queues_seen and state.capacity_epoch != self._epoch_seen:
                self.held = hold()
        woken = self.wake(self.held)
        self.woke = set(woken) if self.dormant_wanted else set()

    def settle_dormant(self) -> None:
        """Bring `dormant` up to date with the groups' heads and wakefulness now (only
        groups that changed since the last call are looked at). A cycle settles it once,
        before its walk, and walks that snapshot: nothing changes it during the walk."""
        if not self.dormant_wanted:
            self._dirty.clear()
            return
        dormant, at, awake, groups = self.dormant, self.dormant_at, self.awake, self.groups
        for where in self._dirty:
            old = at.get(where)
            now: Position | None = None
            if where in groups and where not in awake:
                now = (self.head(where), where)
                if old is not None and old[0] is now[0]:
                    continue  # the same head, still dormant
            cls = (where[0], where[3])
            if old is not None:
                del at[where]
                dormant[cls].remove(old)
                if not dormant[cls]:
                    del dormant[cls]
            if now is not None:
                at[where] = now
                if cls not in dormant:
                    dormant[cls] = SortedList()
                dormant[cls].add(now)
        self._dirty.clear()

    def fell_asleep(self, where: GroupKey) -> None:
        """The group (asleep on quota) fell asleep in this cycle: its turn passed it."""
        self.slept_now.add(where)
        room = self.short_of_quota[where][0]
        self._slept_in.setdefault(room, []).append(where)
        self._changed(room, where)

    def _changed(self, room: Room, where: GroupKey | None = None) -> None:
        """`is_held` may have changed for the group (None: for any of the room's)."""
        if where is None or where in self.watched:
            self.changes[room] = self.changes.get(room, 0) + 1

    def is_held(self, where: GroupKey) -> bool:
        """Whether the group sleeps on quota only because its room was held at the start
        of this cycle (`start_cycle`): its wait was over then."""
        record = self.short_of_quota.get(where)
        if record is None or where in self.slept_now:
            return False
        limit = self.held.get(record[0])
        return limit is not None and record[1] <= limit

    def wake_held(self, where: GroupKey) -> None:
        """End a held group's sleep on quota, as the start of the cycle would have."""
        self._unquota(where)

    def _unquota(self, where: GroupKey) -> bool:
        """End the group's sleep on quota (its heap entry goes stale); whether it woke
        (its shape may sleep)."""
        record = self.short_of_quota.pop(where)
        self._quota_live[record[0]] -= 1
        self._changed(record[0], where)
        self.unsure.discard(where)
        return self._rouse(where)

    def held_of(self, room: Room) -> list[tuple[int, GroupKey]]:
        """The room's held groups (amount, group), in no particular order."""
        limit = self.held.get(room)
        if limit is None:
            return []
        short, slept = self.short_of_quota, self.slept_now
        return [
            (amount, group)
            for amount, group, record in _within(self._quota_sleepers.get(room, []), limit)
            if short.get(group) is record and group not in slept
        ]

    def least_amount(self, room: Room) -> int | None:
        """No group sleeps on the room for less (None: none sleeps on it)."""
        heap = self._quota_sleepers.get(room)
        return heap[0][0] if heap else None

    def quota_rooms(self) -> list[Room]:
        """Rooms some group sleeps on."""
        return [room for room, live in self._quota_live.items() if live > 0]

    def wake(
        self, held: Mapping[Room, int] | None = None, turn: Entry | None = None
    ) -> list[GroupKey]:
        """Wake every sleeper whose wait is over: shapes whose pods the free devices
        could host, groups whose queue has the room (all of them after a change to the
        queue tree or namespaces). Free devices and headroom grow only with the state's
        capacity epoch, so nothing wakes while it stands still. Returns the groups woken.

        At a cycle's start, the rooms `held` are left asleep (`start_cycle`); during its
        walk (at `turn`, the walk's entry), held groups whose turn is still to come stay
        held: the walk decides at their turn."""
        state = self.state
        quota = state.quota
        seen = (quota.generation, state.namespace_generation)
        changed, self._queues_seen = seen != self._queues_seen, seen
        woken: list[GroupKey] = []
        self.raised = []
        if not changed and state.capacity_epoch == self._epoch_seen:
            return woken
        self._epoch_seen = state.capacity_epoch
        inventory = state.inventory
        for need, waiting in self._sleepers.items():
            fitting = _pods_fitting(inventory, need)
            while waiting and (fitting is None or waiting[0][0] <= fitting):
                _, shape = waiting.pop(0)
                del self.asleep[shape]
                woken.extend(w for w in self._of_shape.get(shape, ()) if self._rouse(w))
        short = self.short_of_quota
        if held:
            over = []  # unsure groups of held rooms whose wait is over
            for group in self.unsure:
                record = short.get(group)
                limit = None if record is None else held.get(record[0])
                if record is not None and limit is not None and record[1] <= limit:
                    over.append(group)
            for group in sorted(over):
                self.wake_held(group)
                if group in self.awake:
                    woken.append(group)
        for (queue, resource), groups in self._quota_sleepers.items():
            if held and (queue, resource) in held:
                continue
            room = None if changed else quota.headroom(queue, resource)[0]
            limit = self.held.get((queue, resource)) if turn is not None else None
            if limit is not None and room is not None:
                if room <= limit:  # only groups that fell asleep in this cycle may wake
                    woken.extend(self._wake_fallen((queue, resource), room))
                else:
                    assert turn is not None
                    woken.extend(self._wake_around_held((queue, resource), groups, room, turn))
                continue
            while groups and (room is None or groups[0][0] <= room):
                _, group, record = heapq.heappop(groups)
                if short.get(group) is not record:
                    continue  # stale: the group left, or sleeps on another entry
                if self._unquota(group):
                    woken.append(group)
        return woken

    def _wake_fallen(self, room: Room, have: int) -> list[GroupKey]:
        """`wake` for a held room whose room is at most what it was at the cycle's start:
        of its sleepers, only those that fell asleep in this cycle can wake (the others
        are held, or need more than it had then)."""
        short = self.short_of_quota
        woken: list[GroupKey] = []
        for group in self._slept_in.get(room, ()):
            record = short.get(group)
            if record is None or record[0] != room or record[1] > have:
                continue
            if self._unquota(group):
                woken.append(group)
        return woken

    def _wake_around_held(
        self,
        held: Room,
        sleepers: list[tuple[int, GroupKey, tuple[Room, int]]],
        room: int,
        turn: Entry,
    ) -> list[GroupKey]:
        """`wake` for a held room whose room grew beyond what it held: the sleepers whose
        amount is at most `room`, those whose turn is after `turn` aside (left in the
        heap, they are held from now on, the room held up to `room`; new ones are listed
        in `raised`), unless unsure; the others' entries go stale there. Returns the
        groups woken."""
        short, slept, limit = self.short_of_quota, self.slept_now, self.held[held]
        woken: list[GroupKey] = []
        for amount, group, record in _within(sleepers, room):
            if short.get(group) is not record:
                continue
            if group not in slept and self.head(group) > turn:
                if amount <= limit:  # held (`is_held`: its record is this entry's)
                    continue
                if group not in self.unsure:
                    self.raised.append((amount, group))
                    continue
            if self._unquota(group):
                woken.append(group)
        self.held[held] = room
        self._changed(held)
        return woken


def _within(
    heap: list[tuple[int, GroupKey, tuple[Room, int]]], limit: int
) -> list[tuple[int, GroupKey, tuple[Room, int]]]:
    """The entries of a heap of quota sleepers whose amount is at most `limit` (stale
    ones too), without taking them out, in no particular order. Readers want most of
    them (the room held covers most sleepers): one pass over the heap's list costs less
    than going down the heap."""
    if not heap or heap[0][0] > limit:
        return []
    return [entry for entry in heap if entry[0] <= limit]


def _pods_fitting(inventory: DeviceInventory, need: Need) -> int | None:
    """Pods of `need` the free devices could host at most; None when that bounds nothing
    (shareable devices serve several pods; network-attached ones combine with any node's)."""
    ms = inventory.match_set(need[0])
    if ms.shareable or None in ms.by_node:
        return None
    return ms.pods_fitting(need[1])


def shortfall(inventory: DeviceInventory, plan: GangPlan) -> tuple[Need, int] | None:
    """A pod set of the plan that the free devices cannot host, as (need, pods)."""
    for demand in plan.demands:
        if demand.primary is None or demand.primary[1] <= 0:
            continue
        pods = demand.pod_set.count
        fitting = _pods_fitting(inventory, demand.primary)
        if fitting is not None and fitting < pods:
            return demand.primary, pods
    return None


def charge_is_exact(gang: Gang) -> bool:
    """Whether the gang's quota charge is its minimum charge whatever devices it gets
    (no firstAvailable, no allocationMode All): a quota refusal then holds for its group."""
    return all(
        len(req.alternatives) == 1 and req.alternatives[0].mode is AllocationMode.EXACT_COUNT
        for ps in gang.pod_sets
        for claim in ps.claims
        for req in claim.spec.requests
    )


class _Cursor:
    """Where the walk is in one dormant class's sorted positions: the next position not
    awake (`awake` is fixed for the walk, so passing awake ones once is enough)."""

    __slots__ = ("at", "awake", "cls", "head", "positions")

    def __init__(
        self, positions: SortedList[Position], cls: HelpClass, awake: frozenset[GroupKey]
    ) -> None:
        self.positions = positions
        self.cls = cls
        self.awake = awake
        self.at = -1
        """The index of the next position."""
        self.head: Position | None = None
        """`positions[at]` (None: past the end)."""
        self.advance()

    def advance(self) -> None:
        """Move past the current position and the awake ones after it."""
        positions, awake = self.positions, self.awake
        i, n = self.at + 1, len(positions)
        head = positions[i] if i < n else None
        while head is not None and head[1] in awake:
            i += 1
            head = positions[i] if i < n else None
        self.at, self.head = i, head


class Frontier:
    """The cycle's walk: the next position of each group it walks, merged by entry.

    A group walked only in case preemption helps it (`maybe`: passed over unvisited if,
    when its turn comes, its queue was searched or `could_help` says no) waits with its
    queue's such groups; only the first of each queue is in the merged heap. Once a queue
    was searched, its turn passes over every such group of it at once (they would each
    be passed over in turn: a queue searched stays searched for the cycle) instead of one
    pop each. Groups are in the walk once at most (`is_queued`).

    The dormant groups of the classes preemption helps at the start (`dormant`: the
    backlog's sorted positions per class, unchanged during the walk) join that way
    without being copied: each such class is a cursor over its sorted positions, and a
    dormant group is in the walk while the cursor has not passed it and its queue's
    conditional groups were not dropped. So a cycle costs what it walks, not the number
    of dormant groups.
    """

    def __init__(
        self,
        positions: Iterable[Position] = (),
        dormant: Mapping[HelpClass, SortedList[Position]] | None = None,
        dormant_at: Mapping[GroupKey, Position] | None = None,
        awake: Iterable[GroupKey] = (),
    ) -> None:
        self._heap: list[tuple[Entry, GroupKey, bool]] = [(e, w, False) for e, w in positions]
        """Positions in order; True marks a queue's first conditional one."""
        heapq.heapify(self._heap)
        self._waiting: dict[str, list[Position]] = {}
        """Conditional positions pushed one by one, per queue (heaps)."""
        self._first: dict[str, Entry] = {}
        self._queued: set[GroupKey] = {w for _, w, _ in self._heap}
        """Groups in the walk, those behind a cursor aside."""
        self._maybe: set[GroupKey] = set()
        """Conditional groups pushed one by one."""
        self._cursors: dict[HelpClass, _Cursor] = {}
        """Per dormant class walked, where the walk is in it."""
        self._lazy: dict[str, list[tuple[Position, int, _Cursor]]] = {}
        """The cursors of each queue not past their end, a heap by their next position."""
        self._dormant_at: Mapping[GroupKey, Position] = dormant_at or {}
        self._awake = frozenset(awake)
        """Groups of `dormant` that are awake now: not behind a cursor (they are walked
        from `positions`)."""
        self._promoted: dict[str, set[GroupKey]] = {}
        """Groups behind a cursor that are no longer conditional, per queue."""
        for n, (cls, sorted_positions) in enumerate(sorted((dormant or {}).items())):
            cursor = _Cursor(sorted_positions, cls, self._awake)
            if cursor.head is not None:  # (a cursor past its end has no group behind it)
                self._cursors[cls] = cursor
                self._lazy.setdefault(cls[0], []).append((cursor.head, n, cursor))
        for queue in sorted(self._lazy):
            heapq.heapify(self._lazy[queue])
            first = self._queue_first(queue)
            if first is not None:
                self._first[queue] = first[0]
                self._heap.append((first[0], first[1], True))
        heapq.heapify(self._heap)

    # ---- membership ------------------------------------------------------------------
    def _behind_cursor(self, where: GroupKey) -> bool:
        """Whether a dormant group is still ahead of its class's cursor."""
        cursor = self._cursors.get((where[0], where[3]))
        if cursor is None:
            return False
        position = self._dormant_at.get(where)
        if position is None or where in self._awake:
            return False
        head = cursor.head
        return head is not None and bool(position >= head)

    def is_queued(self, where: GroupKey) -> bool:
        """Whether the group is in the walk."""
        return where in self._queued or self._behind_cursor(where)

    def is_maybe(self, where: GroupKey) -> bool:
        """Whether the group is in the walk only in case preemption helps it."""
        if where in self._maybe:
            return True
        return self._behind_cursor(where) and where not in self._promoted.get(where[0], ())

    def certain(self, groups: Iterable[GroupKey]) -> None:
        """The groups (those in the walk) are walked whatever preemption would do."""
        for where in groups:
            if where in self._maybe:
                self._maybe.discard(where)
            elif self._behind_cursor(where):
                self._promoted.setdefault(where[0], set()).add(where)

    # ---- a queue's conditional positions -----------------------------------------------
    def _queue_first(self, queue: str) -> Position | None:
        """The queue's first conditional position, pushed or behind a cursor."""
        best: Position | None = None
        waiting = self._waiting.get(queue)
        if waiting:
            best = waiting[0]
        cursors = self._lazy.get(queue)
        if cursors and (best is None or cursors[0][0] < best):
            best = cursors[0][0]
        return best

    def _take_first(self, queue: str, position: Position) -> None:
        """Take the queue's first conditional position (`position`) out of the walk."""
        waiting = self._waiting.get(queue)
        if waiting and waiting[0] is position:
            heapq.heappop(waiting)
            self._queued.discard(position[1])
            return
        cursors = self._lazy[queue]
        _, n, cursor = cursors[0]
        if cursor.head is not position:
            raise AssertionError(f"{position} is not the first of queue {queue}")
        cursor.advance()
        if cursor.head is None:
            heapq.heappop(cursors)
            del self._cursors[cursor.cls]
        else:
            heapq.heapreplace(cursors, (cursor.head, n, cursor))
        self._promoted.get(queue, set()).discard(position[1])

    def push_conditional(self, positions: Iterable[Position]) -> None:
        """`push(position, conditional=True)` for each, at once."""
        touched: set[str] = set()
        for position in positions:
            where = position[1]
            self._queued.add(where)
            self._maybe.add(where)
            waiting = self._waiting.get(where[0])
            if waiting is None:
                waiting = self._waiting[where[0]] = []
            waiting.append(position)
            touched.add(where[0])
        for queue in sorted(touched):
            heapq.heapify(self._waiting[queue])
            first = self._queue_first(queue)
            assert first is not None
            if self._first.get(queue) is not first[0]:
                self._first[queue] = first[0]
                heapq.heappush(self._heap, (first[0], first[1], True))

    def push(self, position: Position, conditional: bool = False) -> None:
        """Walk the group from `position` (conditionally: see the class docstring)."""
        entry, where = position
        self._queued.add(where)
        if not conditional:
            heapq.heappush(self._heap, (entry, where, False))
            return
        self._maybe.add(where)
        queue = where[0]
        waiting = self._waiting.get(queue)
        if waiting is None:
            waiting = self._waiting[queue] = []
        heapq.heappush(waiting, position)
        if self._queue_first(queue) is position:  # a new first: it joins the merged heap
            self._first[queue] = entry
            heapq.heappush(self._heap, (entry, where, True))

    def pop(self, searched: set[str]) -> tuple[Entry, GroupKey, bool] | None:
        """The next position (the group leaves the walk) and whether it was walked only
        in case preemption helps it, or None at the end. A queue's conditional groups are
        dropped at its first one's turn if it is in `searched` (that first one is
        returned, for the caller to pass over)."""
        heap = self._heap
        while heap:
            entry, where, first = heapq.heappop(heap)
            if not first:
                self._queued.discard(where)
                maybe = where in self._maybe
                self._maybe.discard(where)
                return entry, where, maybe
            queue = where[0]
            if self._first.get(queue) is not entry:
                continue  # an earlier first of the queue, back with its queue's others
            maybe = self.is_maybe(where)
            position = self._queue_first(queue)
            assert position is not None and position[0] is entry
            self._take_first(queue, position)
            self._maybe.discard(where)
            if queue in searched:
                self._drop(queue)
            elif (following := self._queue_first(queue)) is not None:
                self._first[queue] = following[0]
                heapq.heappush(heap, (following[0], following[1], True))
            else:
                del self._first[queue]
            return entry, where, maybe
        return None

    def _drop(self, queue: str) -> None:
        """Take the queue's conditional groups out of the walk; those no longer
        conditional go on in the merged heap."""
        for entry, where in self._waiting.pop(queue, ()):
            if where in self._maybe:
                self._maybe.discard(where)
                self._queued.discard(where)
            else:
                heapq.heappush(self._heap, (entry, where, False))
        for where in sorted(self._promoted.pop(queue, ())):
            if self._behind_cursor(where):
                entry = self._dormant_at[where][0]
                self._queued.add(where)
                heapq.heappush(self._heap, (entry, where, False))
        for _, _, cursor in self._lazy.pop(queue, ()):
            del self._cursors[cursor.cls]
        del self._first[queue]
