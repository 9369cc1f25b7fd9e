"""How a long-running server process runs: its event loop and its garbage collector.

Used by the processes that serve (`phalanx controller`, `phalanx webhook`, `phalanx
emulator`, and the bench's copies of them), never by library code or tests, which run
on whatever loop they are given.

- The event loop is uvloop's where it is installed (a dependency on Linux and macOS):
  the same asyncio API, with the loop, its timers and its sockets in C; a controller
  spends a large part of its CPU there (every request and watch event goes through it).
- The objects alive once the process has started (imported modules, classes, the
  client's generated models: over 100,000) are moved out of the collector's sight
  (`gc.freeze`), and young objects are collected in larger batches. The controller
  freezes again once its caches have synced (`freeze_heap`): the cluster's state built
  then (gangs, pods, reservations, device tables: hundreds of thousands of objects for
  a few thousand gangs) lives as long as the process, and a full collection walking it
  stalled a decision cycle for 150+ ms (measured in `phalanx bench engine`, which runs
  its cycles the same way). What is frozen and later dropped in a reference cycle is
  not reclaimed: at most what the first state held. A server process
  allocates a great many short-lived dicts per request; with Python's defaults, every
  full collection walked all of them and the imports again, which cost a fifth of the
  controller's and the emulator's CPU under load. JSON trees hold no reference cycles,
  so what is frozen and later dropped is still freed (by reference counting).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

YOUNG_THRESHOLD = 20_000
"""Allocations (net of deallocations) between collections of the youngest generation
(Python's default: 700)."""
OLDER_THRESHOLDS = (20, 20)
"""Collections of one generation per collection of the next (Python's: 10, 10)."""


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop if installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def freeze_heap() -> None:
    """Move what is alive now out of the collector's sight (after a collection, so no
    garbage is frozen with it)."""
    gc.collect()
    gc.freeze()


def settle_heap() -> tuple[int, int, int]:
    """Freeze what exists now (call it once start-up is done) and collect young objects
    in larger batches; returns the thresholds it replaced."""
    before = gc.get_threshold()
    freeze_heap()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    return before


@contextlib.contextmanager
def settled_heap() -> Iterator[None]:
    """The heap settled (`settle_heap`) inside, and the collector as it was afterwards,
    for a caller that goes on (a test invoking the command line, the bench's phases)."""
    before = settle_heap()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def serve(main: Coroutine[Any, Any, T]) -> T:
    """Run a server's main coroutine to completion on a fresh loop (`asyncio.run`), the
    heap settled while it runs."""
    with settled_heap(), asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
