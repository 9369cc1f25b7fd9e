"""The shortest prefix of a list of running gangs whose eviction lets a gang fit.

Shared by preemption (fewest victims in preference order) and the starvation guard
(earliest start: running gangs by estimated end). Fitting only grows as more is
evicted, so the search first skips prefixes whose devices, with the free ones, cannot
cover the gang (counting, no probe), then gallops (k, 2k, 4k, ...) to a prefix that
fits and binary-searches below it. A probe costs about what it evicts, so this keeps
probes near the size of the answer instead of starting from "evict everything".
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence

from controller.engine.model import DEVICE_QUOTA_PREFIX
from controller.engine.state import ClusterState

_shareable: weakref.WeakKeyDictionary[ClusterState, tuple[int, bool]] = weakref.WeakKeyDictionary()


def free_devices(state: ClusterState, held: int | None = None) -> int | None:
    """Published devices nobody holds (None when shareable devices make counting
    meaningless), from the inventory's count of held ones (or `held`: that count as a
    what-if probe's state is settled, `CycleContext.held_published`)."""
    inv = state.inventory
    hit = _shareable.get(state)
    if hit is None or hit[0] != inv.generation:
        hit = _shareable[state] = (
            inv.generation,
            any(d.shareable for d in inv.devices.values()),
        )
    if hit[1]:
        return None
    return len(inv.devices) - (inv.held_published if held is None else held)


def devices_needed(charge: Mapping[str, int]) -> int:
    """Devices of every class in a quota charge (its `devices/<class>` entries)."""
    return sum(v for r, v in charge.items() if r.startswith(DEVICE_QUOTA_PREFIX))


def device_floor(
    state: ClusterState,
    need: int,
    uids: Sequence[str],
    free: int | None,
    held: Callable[[str], int] | None = None,
) -> int | None:
    """The longest prefix of `uids` that certainly frees too few of the `need` devices
    (0 when counting cannot tell), or None when even all of them free too few.
    `held`: the devices each gang holds (default: its reservation's in the state)."""
    if not need or free is None:
        return 0
    if held is None:
        admitted = state.admitted

        def held(uid: str) -> int:
            return admitted[uid].device_count()

    have = free
    for k, uid in enumerate(uids):
        if have >= need:
            return max(0, k - 1)
        have += held(uid)
    return len(uids) - 1 if have >= need else None


def shortest_prefix(fits: Callable[[int], bool | None], floor: int, n: int) -> int | None:
    """The smallest k in (floor, n] with `fits(k)` (monotone in k; prefix `floor` is known
    not to fit), or None if none does. `fits` returns None when its probe budget is
    spent: the search then answers with the smallest k known to fit, if any."""
    if n <= floor:
        return None
    lo, step, hi = floor, 1, floor + 1
    while True:
        hi = min(hi, n)
        ok = fits(hi)
        if ok is None:
            return None
        if ok:
            break
        if hi >= n:
            return None
        lo, step = hi, step * 2
        hi = lo + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok = fits(mid)
        if ok is None:
            break
        if ok:
            hi = mid
        else:
            lo = mid
    return hi
