"""The event kernel: virtual time, stable ordering, bounded runs."""

from __future__ import annotations

import pytest

from simulations.kernel import Kernel


def recording_kernel():
    k = Kernel()
    seen: list[tuple[float, str]] = []
    for kind in ("a", "b"):
        k.on(kind, lambda t, p, kind=kind: seen.append((t, f"{kind}{p}")))
    return k, seen


def test_events_run_in_time_order():
    k, seen = recording_kernel()
    k.schedule(5, "a", 1)
    k.schedule(2, "b", 2)
    k.run()
    assert seen == [(2, "b2"), (5, "a1")]


def test_events_at_the_same_time_run_in_scheduling_order():
    k, seen = recording_kernel()
    for i in range(5):
        k.schedule(1.0, "ab"[i % 2], i)
    k.run()
    assert [s for _, s in seen] == ["a0", "b1", "a2", "b3", "a4"]


def test_handlers_may_schedule_more_events():
    k = Kernel()
    seen = []

    def tick(t, n):
        seen.append(t)
        if n:
            k.schedule(t + 10, "tick", n - 1)

    k.on("tick", tick)
    k.schedule(0, "tick", 3)
    k.run()
    assert seen == [0, 10, 20, 30] and k.now == 30 and k.processed == 4


def test_run_until_stops_before_later_events_and_keeps_them():
    k, seen = recording_kernel()
    k.schedule(1, "a", 1)
    k.schedule(100, "a", 2)
    k.run(until=50)
    assert seen == [(1, "a1")] and k.now == 50 and k.pending() == 1


def test_scheduling_in_the_past_is_refused():
    k, _ = recording_kernel()
    k.schedule(10, "a")
    k.run()
    with pytest.raises(ValueError, match="before now"):
        k.schedule(5, "a")


def test_unknown_event_kind_is_refused():
    with pytest.raises(ValueError, match="no handler for event kind 'zzz'"):
        Kernel().schedule(0, "zzz")


def test_after_event_hook_sees_every_event():
    k, _ = recording_kernel()
    kinds = []
    k.after_event = kinds.append
    k.schedule(0, "a")
    k.schedule(0, "b")
    k.run()
    assert kinds == ["a", "b"]
