"""Backoff delays: exponential, capped, jittered, and never below a server's Retry-After."""

from __future__ import annotations

import random

from controller.kube.backoff import Backoff


def test_delays_double_until_the_cap_without_jitter() -> None:
    backoff = Backoff(initial=1.0, cap=5.0, factor=2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_stretches_each_delay_by_at_most_its_factor() -> None:
    backoff = Backoff(initial=1.0, cap=1.0, jitter=0.5, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(50)]
    assert all(1.0 <= d <= 1.5 for d in delays) and len(set(delays)) > 1


def test_retry_after_is_a_floor() -> None:
    assert Backoff(initial=1.0, jitter=0.0).next_delay(at_least=10.0) == 10.0


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(initial=1.0, jitter=0.0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0
