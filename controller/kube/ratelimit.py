"""Client-side rate limiting, as client-go's token bucket: `qps` requests a second on
average, `burst` at once after a quiet spell (kube-scheduler runs with 50 and 100).
kubernetes-asyncio has none; without one a controller's cold start can flood the API
server with thousands of writes in a second."""

from __future__ import annotations

import asyncio


class TokenBucket:
    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be > 0 and burst >= 1, got qps={qps}, burst={burst}")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    async def acquire(self) -> None:
        """Wait for a token (loop time, so tests under looptime do not wait for real).

        Each caller reserves the next token, the bucket going below zero, and sleeps
        once until it is due (client-go's reservations): waiters are served in order,
        and a token costs one wake-up, not one per waiter (hundreds of waiters polling
        the bucket cost as much CPU as the requests themselves)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        if self._tokens >= -1e-6:  # float and clock rounding must not stall
            return
        try:
            await asyncio.sleep(-self._tokens / self.qps)
        except asyncio.CancelledError:
            self._tokens += 1  # give the reservation back
            raise
