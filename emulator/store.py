"""Objects, one resourceVersion counter (as etcd has) and the watch window.

Every write gets the next resourceVersion across all resources, and is appended to one
event log. The log is the watch cache: a watch from resourceVersion R replays the events
after R, so R must still be inside the window; after eviction such a watch gets an
ERROR 410. The log also serves `resourceVersionMatch=Exact` lists by undoing the newer
events, which works back to the last compaction (etcd's) or the window's start.

Window eviction follows the real watch cache closely enough for clients to notice the same
things: events leave once the log holds more than `min_events` and the oldest is older than
`window_seconds` (75 s), or when it holds more than `max_events`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from emulator.jsontree import clone

Obj = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped objects."""

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(slots=True)
class Event:
    rv: int
    resource: str
    type: str
    obj: Obj
    prev: Obj | None
    """The stored state before this event (None for ADDED)."""
    at: float


@dataclass(eq=False)
class Watcher:
    """A live watch: gets the events of one resource (and namespace) that `match` accepts."""

    resource: str
    namespace: str | None
    match: Callable[[Obj], bool]
    queue: asyncio.Queue[tuple[str, Obj, Event | None] | None] = field(
        default_factory=asyncio.Queue
    )

    def offer(self, event: Event) -> None:
        """Queue (type, object, event); the event only when the object is the event's own,
        so that its serialisation can be shared by every watcher of it."""
        translated = translate(event, self.namespace, self.match)
        if translated is not None:
            kind, obj = translated
            self.queue.put_nowait((kind, obj, event if obj is event.obj else None))

    def close(self) -> None:
        self.queue.put_nowait(None)


def translate(
    event: Event, namespace: str | None, match: Callable[[Obj], bool]
) -> tuple[str, Obj] | None:
    """The event a filtered watch sees: leaving the filter is DELETED (old object, new rv)."""
    if namespace is not None and event.obj["metadata"].get("namespace", "") != namespace:
        return None
    new_match = match(event.obj)
    if event.type == ADDED:
        return (ADDED, event.obj) if new_match else None
    if event.type == DELETED:
        return (DELETED, event.obj) if new_match else None
    old_match = event.prev is not None and match(event.prev)
    if old_match and new_match:
        return (MODIFIED, event.obj)
    if new_match:
        return (ADDED, event.obj)
    if old_match and event.prev is not None:
        gone = clone(event.prev)
        gone["metadata"]["resourceVersion"] = event.obj["metadata"]["resourceVersion"]
        return (DELETED, gone)
    return None


class TooOld(Exception):
    """The resourceVersion has left the window (or was compacted)."""

    def __init__(self, requested: str, oldest: int) -> None:
        super().__init__(requested)
        self.requested = requested
        self.oldest = oldest


class Store:
    """All objects by resource key, the rv counter, the event log and the live watchers."""

    def __init__(
        self,
        *,
        first_rv: int = 1000,
        window_seconds: float = 75.0,
        min_events: int = 100,
        max_events: int = 100_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.rv = first_rv
        self.window_start = first_rv
        """Watches from at least this rv can be served; older ones get 410."""
        self.compacted = first_rv
        self.window_seconds = window_seconds
        self.min_events = min_events
        self.max_events = max_events
        self._clock = clock or _loop_time
        self._objects: dict[str, dict[Key, Obj]] = {}
        self._log: deque[Event] = deque()
        self._watchers: list[Watcher] = []

    # --- reads -------------------------------------------------------------------------

    def get(self, resource: str, key: Key) -> Obj | None:
        obj = self._objects.get(resource, {}).get(key)
        return clone(obj) if obj is not None else None

    def peek(self, resource: str, key: Key) -> Obj | None:
        """The stored object itself (not a copy): for read-only checks."""
        return self._objects.get(resource, {}).get(key)

    def items(self, resource: str, namespace: str | None = None) -> Iterator[Obj]:
        """Stored objects (not copies) in key order."""
        table = self._objects.get(resource, {})
        for key in sorted(table):
            if namespace is None or key[0] == namespace:
                yield table[key]

    def count(self, resource: str) -> int:
        return len(self._objects.get(resource, {}))

    def items_at(self, resource: str, rv: int, namespace: str | None = None) -> list[Obj]:
        """The objects as they were at `rv` (Exact lists)."""
        if rv < max(self.compacted, self.window_start):
            raise TooOld(str(rv), self.window_start)
        table = dict(self._objects.get(resource, {}))
        for event in reversed(self._log):
            if event.rv <= rv:
                break
            if event.resource != resource:
                continue
            key = obj_key(event.obj)
            if event.type == ADDED:
                table.pop(key, None)
            elif event.prev is not None:
                table[key] = event.prev
        return [table[key] for key in sorted(table) if namespace is None or key[0] == namespace]

    # --- writes ------------------------------------------------------------------------

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def create(self, resource: str, obj: Obj) -> Obj:
        """Store `obj` itself (the caller hands it over) and return it: read it, never
        change it (copy first); the same goes for `update` and `delete`."""
        rv = self.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        self._objects.setdefault(resource, {})[obj_key(obj)] = obj
        self._append(Event(rv, resource, ADDED, obj, None, self._clock()))
        return obj

    def update(self, resource: str, obj: Obj) -> Obj:
        key = obj_key(obj)
        table = self._objects[resource]
        prev = table[key]
        rv = self.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        table[key] = obj
        self._append(Event(rv, resource, MODIFIED, obj, prev, self._clock()))
        return obj

    def delete(self, resource: str, key: Key) -> Obj:
        """Remove the object; the DELETED event (and the result) carry a new rv."""
        prev = self._objects[resource].pop(key)
        rv = self.next_rv()
        gone = clone(prev)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._append(Event(rv, resource, DELETED, gone, prev, self._clock()))
        return gone

    def _append(self, event: Event) -> None:
        self._log.append(event)
        self._evict()
        for watcher in list(self._watchers):
            if watcher.resource == event.resource:
                watcher.offer(event)

    def _evict(self) -> None:
        now = self._clock()
        log = self._log
        while log and (
            len(log) > self.max_events
            or (len(log) > self.min_events and now - log[0].at > self.window_seconds)
        ):
            self.window_start = log.popleft().rv

    # --- watches -----------------------------------------------------------------------

    def watch(
        self,
        resource: str,
        namespace: str | None,
        match: Callable[[Obj], bool],
        since: int | None,
    ) -> Watcher:
        """Register a watcher; with `since`, first queue the window's events after it."""
        watcher = Watcher(resource, namespace, match)
        if since is not None:
            if since < self.window_start:
                raise TooOld(str(since), self.window_start)
            for event in self._log:
                if event.rv > since and event.resource == resource:
                    watcher.offer(event)
        self._watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def close_watches(self) -> None:
        for watcher in self._watchers:
            watcher.close()
        self._watchers.clear()

    # --- test hooks --------------------------------------------------------------------

    def forget_window(self, up_to: int | None = None) -> None:
        """Drop watch-window events up to `up_to` (all by default), as cache eviction would."""
        limit = self.rv if up_to is None else up_to
        while self._log and self._log[0].rv <= limit:
            self._log.popleft()
        self.window_start = max(self.window_start, limit)

    def compact(self, up_to: int | None = None) -> None:
        """etcd compaction: Exact lists before `up_to` (default: now) get 410."""
        self.compacted = self.rv if up_to is None else up_to


def obj_key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()
