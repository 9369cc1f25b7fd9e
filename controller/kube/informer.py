"""One generic list+watch cache, used for every resource (kubernetes-asyncio has none).

The cache follows the server's resourceVersion: a first sync (a paginated list, or a
watch with `sendInitialEvents` where the server offers it), then one watch after another
from the last version seen, with bookmarks so a quiet resource still moves forward.

- A 410 (the version left the server's window) re-syncs, and the fresh state is diffed
  against the cache: handlers see only what really changed (adds, updates, deletes),
  never a rebuild, so the engine's incremental state stays exact.
- A watch that stays silent past `inactivity_timeout` (bookmarks included) is presumed
  dead (a half-open connection) and is re-opened from the last version: no re-list.
- Errors back off exponentially with jitter; a 429's Retry-After is honoured.
- Handlers are plain functions called as (type, old, new) in the informer's task:
  ADDED (None, new), MODIFIED (old, new), DELETED (old, last state). A handler that
  raises is logged and does not stop the cache.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import structlog

from controller.kube.backoff import Backoff
from controller.kube.resources import Resource
from controller.kube.rest import KubeError, Obj, Rest

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

Handler = Callable[[str, Obj | None, Obj], None]

_TRANSIENT = (KubeError, aiohttp.ClientError, OSError, TimeoutError, json.JSONDecodeError)


class _Resync(Exception):
    """The cache's resourceVersion is gone: sync afresh (and diff)."""


class _WatchListUnavailable(Exception):
    """The server does not stream initial events: use list+watch from now on."""


@dataclass
class InformerStats:
    """Counters for metrics and tests."""

    lists: int = 0
    watches: int = 0
    resyncs: int = 0
    """410s that made the cache sync again."""
    errors: int = 0
    inactive: int = 0
    """Watches re-opened because they stayed silent too long."""


def resource_version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _newer(version: str, than: str) -> bool:
    """resourceVersions are opaque, but etcd's (and the emulator's) are increasing
    integers; anything else counts as newer when different."""
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return version != than


class _Silence:
    """Ends a watch (a cancel scope around it) once `timeout` seconds of loop time pass
    without an event. An event only notes the time; the one timer re-arms itself when it
    finds that an event came meanwhile. (A scope per event, `move_on_after`, cost a
    tenth of the controller's CPU under a stream of events.)"""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.scope = anyio.CancelScope()
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.timer = self.loop.call_later(timeout, self._check)

    def heard(self) -> None:
        self.last = self.loop.time()

    @property
    def cancelled_caught(self) -> bool:
        return self.scope.cancelled_caught

    def _check(self) -> None:
        left = self.last + self.timeout - self.loop.time()
        if left <= 0:
            self.scope.cancel()
        else:
            self.timer = self.loop.call_later(left, self._check)

    def __enter__(self) -> _Silence:
        self.scope.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.timer.cancel()
        return bool(self.scope.__exit__(*exc))


class Informer:
    """A list+watch cache of one resource (all namespaces, or one), optionally filtered."""

    def __init__(
        self,
        rest: Rest,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
        watch_timeout: float = 300.0,
        inactivity_timeout: float = 120.0,
        watch_list: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        self.rest = rest
        self.resource = resource
        self.namespace = namespace
        self.selectors = {"labelSelector": label_selector, "fieldSelector": field_selector}
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.inactivity_timeout = inactivity_timeout
        self.watch_list = watch_list
        self.backoff = backoff or Backoff()
        self.cache: dict[str, Obj] = {}
        self.resource_version: str | None = None
        """The version the cache is at; None until synced, and again after a 410."""
        self.synced = anyio.Event()
        """Set once the first full state has been delivered; stays set."""
        self.stats = InformerStats()
        self._handlers: list[Handler] = []
        self._rng = random.Random()
        self.log = structlog.get_logger("phalanx.informer").bind(resource=resource.plural)

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def get(self, key: str) -> Obj | None:
        return self.cache.get(key)

    def __iter__(self) -> Iterator[Obj]:
        return iter(list(self.cache.values()))

    # ---- the loop ----------------------------------------------------------------------
    async def run(self) -> None:
        """Keep the cache in step until cancelled."""
        while True:
            try:
                if self.resource_version is None and not self.watch_list:
                    await self._list()
                if await self._watch():
                    self.backoff.reset()
                    continue
                delay = self.backoff.next_delay()
            except _Resync:
                self.stats.resyncs += 1
                self.log.info("resync", reason="resourceVersion expired")
                self.resource_version = None
                continue
            except _WatchListUnavailable:
                self.log.info("watch-list unavailable, falling back to list+watch")
                self.watch_list = False
                continue
            except _TRANSIENT as exc:
                if isinstance(exc, KubeError) and exc.status == 410:
                    self.stats.resyncs += 1
                    self.resource_version = None
                    continue
                self.stats.errors += 1
                retry_after = exc.retry_after if isinstance(exc, KubeError) else None
                delay = self.backoff.next_delay(retry_after or 0.0)
                self.log.warning("list/watch failed", error=str(exc), retry_in=round(delay, 3))
            await anyio.sleep(delay)

    async def _list(self) -> None:
        """A paginated list; its state replaces the cache by difference."""
        fresh: dict[str, Obj] = {}
        token: str | None = None
        version = ""
        while True:
            page = await self.rest.get(
                self.resource.path(self.namespace),
                {**self.selectors, "limit": self.page_size, "continue": token},
            )
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion", ""))
            for item in page.get("items") or ():
                fresh[self.resource.key(item)] = item
            token = meta.get("continue") or None
            if token is None:
                break
        self.stats.lists += 1
        self._replace(fresh, version)

    async def _watch(self) -> bool:
        """One watch, until the server ends it or it goes silent. True if it delivered
        anything (so the next one starts without delay)."""
        initial = self.resource_version is None
        query: dict[str, object] = {
            **self.selectors,
            "allowWatchBookmarks": True,
            "timeoutSeconds": int(self.watch_timeout * (1.0 + self._rng.random())),
        }
        if initial:
            query |= {"sendInitialEvents": True, "resourceVersionMatch": "NotOlderThan"}
        else:
            query["resourceVersion"] = self.resource_version
        self.stats.watches += 1
        fresh: dict[str, Obj] | None = {} if initial else None
        delivered = False
        try:
            async with self.rest.watch(self.resource.path(self.namespace), query) as events:
                with _Silence(self.inactivity_timeout) as silent:
                    while (event := await anext(events, None)) is not None:
                        silent.heard()
                        delivered = True
                        fresh = self._apply(event, fresh)
                if silent.cancelled_caught:
                    self.stats.inactive += 1
                    if fresh is not None:
                        raise _WatchListUnavailable()
                    self.log.info("watch silent too long, re-opening")
                    return delivered
        except KubeError as exc:
            if initial and exc.status in (400, 403, 422):
                raise _WatchListUnavailable() from exc
            raise
        if fresh is not None:
            raise KubeError(0, "WatchEnded", "watch ended before its initial events did")
        return delivered

    def _apply(self, event: Obj, fresh: dict[str, Obj] | None) -> dict[str, Obj] | None:
        """One watch event; returns the initial-events buffer (None once it is over)."""
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            error = KubeError.from_status(obj)
            if error.status == 410:
                raise _Resync()
            raise error
        if kind == "BOOKMARK":
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            if fresh is not None and annotations.get(INITIAL_EVENTS_END) == "true":
                self._replace(fresh, resource_version(obj))
                return None
            if fresh is None:
                self.resource_version = resource_version(obj)
            return fresh
        key = self.resource.key(obj)
        if fresh is not None:
            if kind == DELETED:
                fresh.pop(key, None)
            else:
                fresh[key] = obj
            return fresh
        self.resource_version = resource_version(obj)
        old = self.cache.get(key)
        if kind == DELETED:
            if old is not None:
                del self.cache[key]
                self._emit(DELETED, old, obj)
        elif old is None or _newer(resource_version(obj), resource_version(old)):
            self.cache[key] = obj  # an event older than an assumed write changes nothing
            self._emit(ADDED if old is None else MODIFIED, old, obj)
        return None

    def assume(self, obj: Obj) -> None:
        """Take the answer of our own write before its watch event arrives (kube-scheduler's
        assume cache), so decisions right after a write see it; the event itself then
        changes nothing. Ignored if the cache already holds that version or a newer one."""
        key = self.resource.key(obj)
        old = self.cache.get(key)
        if old is not None and not _newer(resource_version(obj), resource_version(old)):
            return
        self.cache[key] = obj
        self._emit(ADDED if old is None else MODIFIED, old, obj)

    def _replace(self, fresh: Mapping[str, Obj], version: str) -> None:
        """Make the cache equal `fresh`, telling handlers only what changed."""
        for key, gone in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                self._emit(DELETED, gone, gone)
        for key, obj in fresh.items():
            old = self.cache.get(key)
            if old is None or resource_version(old) != resource_version(obj):
                self.cache[key] = obj
                self._emit(ADDED if old is None else MODIFIED, old, obj)
        self.resource_version = version
        if not self.synced.is_set():
            self.log.info("synced", objects=len(self.cache), resource_version=version)
        self.synced.set()

    def _emit(self, kind: str, old: Obj | None, new: Obj) -> None:
        for handler in self._handlers:
            try:
                handler(kind, old, new)
            except Exception:
                self.log.exception("handler failed", type=kind, key=self.resource.key(new))
