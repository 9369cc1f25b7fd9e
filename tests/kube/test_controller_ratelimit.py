"""The client's token bucket: a burst at once, then `qps` a second."""

from __future__ import annotations

import asyncio

import pytest

from controller.kube.ratelimit import TokenBucket

pytestmark = pytest.mark.looptime


async def test_a_burst_passes_at_once_then_requests_are_paced_at_qps() -> None:
    bucket = TokenBucket(qps=10, burst=5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    times = []
    for _ in range(15):
        await bucket.acquire()
        times.append(round(loop.time() - start, 3))
    assert times[:5] == [0.0] * 5
    assert times[-1] == pytest.approx(1.0)


def test_a_bucket_without_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="qps must be > 0"):
        TokenBucket(qps=0, burst=1)


async def test_concurrent_waiters_are_served_in_order_one_token_apart() -> None:
    bucket = TokenBucket(qps=10, burst=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    served: list[tuple[int, float]] = []

    async def waiter(i: int) -> None:
        await bucket.acquire()
        served.append((i, round(loop.time() - start, 3)))

    await asyncio.gather(*(waiter(i) for i in range(5)))
    assert served == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]


async def test_a_cancelled_waiter_gives_its_token_back() -> None:
    bucket = TokenBucket(qps=10, burst=1)
    loop = asyncio.get_running_loop()
    await bucket.acquire()
    start = loop.time()
    cancelled = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    await bucket.acquire()
    assert loop.time() - start == pytest.approx(0.1)
