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
