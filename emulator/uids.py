"""Object uids. A real API server draws random (version 4) uids; `OrderedUids` makes
them grow with creation order instead (the layout of a version 7 UUID: milliseconds, then
a counter), for runs where a tie broken by uid should fall the way objects were made.

The engine orders gangs of equal priority and equal `creationTimestamp` (one-second
resolution) by uid; `phalanx replay` creates the jobs of one instant in the simulator's
order and, on the built-in emulator, turns this on so the tie falls as in the simulator.
"""

from __future__ import annotations

import time
import uuid


def random_uid() -> str:
    return str(uuid.uuid4())


class OrderedUids:
    """Each call gives a uid that sorts (as a string) after every earlier one."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> str:
        # 48 bits of milliseconds, then 74 bits of counter: strictly increasing even
        # within a millisecond or if the clock steps back.
        value = max(time.time_ns() // 1_000_000 << 74, self._last + 1)
        self._last = value
        ms, rest = value >> 74, value & ((1 << 74) - 1)
        high, low = rest >> 62, rest & ((1 << 62) - 1)
        number = (ms << 80) | (0x7 << 76) | (high << 64) | (0b10 << 62) | low
        return str(uuid.UUID(int=number))
